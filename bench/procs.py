"""CPU time of processes, read from /proc (Linux), so no extra dependency is needed.

Server processes are found by their command line: Ray sets each Serve replica's
process title to `ray::ServeReplica:<app>:<Deployment>` (with a `.method` suffix while
it runs a call), the proxy to `ray::ProxyActor`, the controller to `ray::ServeController`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Optional

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_after_name(pid: int) -> Optional[list[str]]:
    """/proc/PID/stat from field 3 (state) on, or None if the process is gone. The
    name (field 2) is skipped whole: it may hold spaces and parentheses."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def cpu_seconds(pid: int) -> Optional[float]:
    """User + system CPU seconds of all threads of `pid`, or None if it is gone."""
    rest = _stat_after_name(pid)
    # utime and stime are fields 14 and 15.
    return None if rest is None else (int(rest[11]) + int(rest[12])) / CLK_TCK


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def all_pids() -> list[int]:
    try:
        return [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []


def find_pids(patterns: dict[str, str]) -> dict[str, list[int]]:
    """For each role, the pids whose command line contains its pattern."""
    out: dict[str, list[int]] = {role: [] for role in patterns}
    for pid in all_pids():
        line = cmdline(pid)
        if not line:
            continue
        for role, pattern in patterns.items():
            if pattern in line:
                out[role].append(pid)
    return out


def parent_pid(pid: int) -> Optional[int]:
    rest = _stat_after_name(pid)
    return None if rest is None else int(rest[1])  # field 4


def same_cluster(roles: dict[str, list[int]], anchor: str = "ingress") -> dict[str, list[int]]:
    """Keep only processes that share the anchor's parent (its raylet): several Ray
    clusters may run on one machine, each with its own proxy and controller."""
    anchors = roles.get(anchor) or []
    # A cluster this process started (its raylet is our child) wins over others.
    ours = [p for p in anchors if parent_pid(parent_pid(p) or 0) == os.getpid()]
    parents = {parent_pid(p) for p in (ours or anchors)} - {None}
    if not parents:
        return roles
    return {role: [p for p in pids if parent_pid(p) in parents] for role, pids in roles.items()}


def serve_patterns(app_name: str) -> dict[str, str]:
    return {
        "ingress": f"ServeReplica:{app_name}:Ingress",
        "detector": f"ServeReplica:{app_name}:Detector",
        "proxy": "ray::ProxyActor",
        "controller": "ray::ServeController",
    }


def system_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()[1:]
    except OSError:
        return (0, 0)
    values = [int(v) for v in parts]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user
    return (total - idle, total)


def loadavg() -> list[float]:
    try:
        with open("/proc/loadavg") as f:
            return [float(v) for v in f.read().split()[:3]]
    except OSError:
        return []


@dataclass
class CpuSnapshot:
    at: float
    per_pid: dict[int, float]
    system: tuple[int, int]


@dataclass
class CpuMeter:
    """CPU cores used by each role between `start()` and `stop()`.

    Processes are looked up at `start()`; a process that appears only later (say, a
    detector replica the autoscaler adds mid-window) is not counted, and `stop()`
    says so in `processes_at_stop`.
    """

    patterns: dict[str, str] = field(default_factory=dict)
    extra: dict[str, list[int]] = field(default_factory=dict)
    roles: dict[str, list[int]] = field(default_factory=dict)
    _start: Optional[CpuSnapshot] = None

    def _find(self) -> dict[str, list[int]]:
        roles = same_cluster(find_pids(self.patterns)) if self.patterns else {}
        for role, pids in self.extra.items():
            roles[role] = list(pids)
        return roles

    def _snap(self) -> CpuSnapshot:
        per_pid: dict[int, float] = {}
        for pids in self.roles.values():
            for pid in pids:
                value = cpu_seconds(pid)
                if value is not None:
                    per_pid[pid] = value
        return CpuSnapshot(time.monotonic(), per_pid, system_jiffies())

    def start(self) -> None:
        self.roles = self._find()
        self._start = self._snap()

    def stop(self) -> dict:
        """{"cores": {role: cores}, "processes": {role: count}, "system_busy": fraction}."""
        assert self._start is not None, "start() first"
        end = self._snap()
        elapsed = max(end.at - self._start.at, 1e-6)
        cores: dict[str, float] = {}
        for role, pids in self.roles.items():
            used = 0.0
            for pid in pids:
                if pid in self._start.per_pid and pid in end.per_pid:
                    used += end.per_pid[pid] - self._start.per_pid[pid]
            cores[role] = round(used / elapsed, 3)
        busy = end.system[0] - self._start.system[0]
        total = end.system[1] - self._start.system[1]
        return {
            "cores": cores,
            "processes": {role: len(pids) for role, pids in self.roles.items()},
            "processes_at_stop": {role: len(pids) for role, pids in self._find().items()},
            # Fraction of all the machine's CPUs that were busy (anyone's processes).
            "system_busy": round(busy / total, 3) if total > 0 else None,
            "cpus": os.cpu_count(),
        }

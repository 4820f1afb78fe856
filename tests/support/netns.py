"""Two network namespaces joined by one veth pair: two "machines" for a Ray cluster.

Each namespace has `lo` up, one address on the pair (a free /30 of 10.214.0.0/16) and
no default route, so nothing started inside either can reach anything but the other.
Ray then runs exactly as on two hosts: every node on its own address, no loopback
special cases, no patching.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.browser import _used_ipv4

POOL = ipaddress.ip_network("10.214.0.0/16")
PREFIX = "rtcnode"  # + "a"/"b" + the creating process's pid


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@dataclass
class NodePair:
    names: tuple[str, str]
    addresses: tuple[str, str]
    links: tuple[str, str]

    @classmethod
    def create(cls) -> "NodePair":
        remove_stale()
        tag = str(os.getpid())
        names = (f"{PREFIX}a{tag}", f"{PREFIX}b{tag}")
        links = (f"rtna{tag}", f"rtnb{tag}")  # at most 15 characters
        used = _used_ipv4()
        subnet = next(s for s in POOL.subnets(new_prefix=30) if not any(s.overlaps(u) for u in used))
        addresses = tuple(str(a) for a in list(subnet.hosts())[:2])
        self = cls(names, addresses, links)  # type: ignore[arg-type]
        try:
            for name in names:
                _run("ip", "netns", "add", name)
            _run("ip", "link", "add", links[0], "netns", names[0], "type", "veth", "peer", "name", links[1], "netns", names[1])
            for name, link, address in zip(names, links, addresses):
                inside = ("ip", "netns", "exec", name)
                _run(*inside, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
                _run(*inside, "ip", "link", "set", "lo", "up")
                _run(*inside, "ip", "addr", "add", f"{address}/30", "dev", link)
                _run(*inside, "ip", "link", "set", link, "up")
        except BaseException:
            self.delete()
            raise
        return self

    def exec_prefix(self, index: int) -> list[str]:
        return ["ip", "netns", "exec", self.names[index]]

    def delete(self) -> None:
        # Deleting a namespace deletes the veth end inside it, and with it the pair.
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def remove_stale() -> None:
    """Namespaces left by killed runs (their creating pid is gone)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        pid = name[len(PREFIX) + 1:]
        if name.startswith(PREFIX) and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None."""
    import shutil

    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"{PREFIX}p{os.getpid()}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"cannot create a network namespace: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None

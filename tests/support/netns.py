"""Network namespaces for tests: private "machines" joined by veth pairs, so a test can
use real, non-loopback addresses that lead nowhere else.

Every namespace made here has `lo` up, IPv4 only (no link-local IPv6 candidates to pair
up or probe), one address on its veth end from a free /30 of a private pool, and no
default route: nothing started inside can reach anything but the other end of its pair.

- `Netns`: one namespace joined to the host (Chromium runs in it: it never gathers
  loopback ICE candidates, so on the host it would stream over the machine's real
  interface).
- `NodePair`: two namespaces joined to each other (a two-node Ray cluster, each node on
  its own address as on two hosts, no loopback special cases, no patching).

Names carry the creating process's pid, so namespaces left by a killed run are found
and removed by the next one.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

# Private /16s for the tests' veth pairs; each pair takes a free /30.
BROWSER_POOL = ipaddress.ip_network("10.213.0.0/16")
NODES_POOL = ipaddress.ip_network("10.214.0.0/16")

BROWSER_PREFIX = "rtcbrowser"  # + pid
NODES_PREFIX = "rtcnode"  # + "a"/"b" + pid


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def _used_ipv4() -> set[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    nets = set()
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.add(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    return nets


def free_pair_addresses(pool: ipaddress.IPv4Network) -> tuple[str, str]:
    """The two host addresses of the first /30 in `pool` that overlaps no address on
    this machine (another run's pair included)."""
    used = _used_ipv4()
    subnet = next(s for s in pool.subnets(new_prefix=30) if not any(s.overlaps(u) for u in used))
    first, second = (str(a) for a in list(subnet.hosts())[:2])
    return first, second


def configure_inside(name: str, link: str, address: str) -> None:
    """Inside namespace `name`: IPv4 only, `lo` up, `address`/30 on `link`, `link` up."""
    inside = ("ip", "netns", "exec", name)
    _run(*inside, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
    _run(*inside, "ip", "link", "set", "lo", "up")
    _run(*inside, "ip", "addr", "add", f"{address}/30", "dev", link)
    _run(*inside, "ip", "link", "set", link, "up")


def remove_stale(prefix: str, delete: Callable[[str, str], None]) -> None:
    """Call `delete(name, pid)` for each namespace named `prefix` + pid (or `prefix` +
    one letter + pid) whose creating process is gone: left by a killed run."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix):]
        pid = rest[1:] if rest[:1].isalpha() else rest
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            delete(name, pid)


def unavailable_reason() -> Optional[str]:
    """Why namespaces cannot be made here, or None."""
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"rtcprobe{os.getpid()}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"cannot create a network namespace: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@dataclass
class Netns:
    """A network namespace with `lo` up and a veth pair to the host."""

    name: str
    host_if: str
    host_ip: str
    ns_ip: str

    @classmethod
    def create(cls) -> "Netns":
        remove_stale(BROWSER_PREFIX, lambda name, pid: cls(name, f"rtcb{pid}h", "", "").delete())
        tag = str(os.getpid())  # interface names: at most 15 characters
        name, host_if, ns_if = f"{BROWSER_PREFIX}{tag}", f"rtcb{tag}h", f"rtcb{tag}n"
        host_ip, ns_ip = free_pair_addresses(BROWSER_POOL)
        self = cls(name, host_if, host_ip, ns_ip)
        try:
            _run("ip", "netns", "add", name)
            _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            _run("ip", "link", "set", ns_if, "netns", name)
            _run("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
            _run("ip", "link", "set", host_if, "up")
            configure_inside(name, ns_if, ns_ip)
        except BaseException:
            self.delete()
            raise
        return self

    def delete(self) -> None:
        # Deleting one end of a veth pair deletes both.
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def _delete_namespace(name: str, _pid: str = "") -> None:
    # Deleting a namespace deletes the veth end inside it, and with it the pair.
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


@dataclass
class NodePair:
    """Two namespaces joined by one veth pair: two "machines"."""

    names: tuple[str, str]
    addresses: tuple[str, str]
    links: tuple[str, str]

    @classmethod
    def create(cls) -> "NodePair":
        remove_stale(NODES_PREFIX, _delete_namespace)
        tag = str(os.getpid())
        names = (f"{NODES_PREFIX}a{tag}", f"{NODES_PREFIX}b{tag}")
        links = (f"rtna{tag}", f"rtnb{tag}")  # at most 15 characters
        self = cls(names, free_pair_addresses(NODES_POOL), links)
        try:
            for name in names:
                _run("ip", "netns", "add", name)
            _run("ip", "link", "add", links[0], "netns", names[0], "type", "veth", "peer", "name", links[1], "netns", names[1])
            for name, link, address in zip(names, links, self.addresses):
                configure_inside(name, link, address)
        except BaseException:
            self.delete()
            raise
        return self

    def exec_prefix(self, index: int) -> list[str]:
        return ["ip", "netns", "exec", self.names[index]]

    def delete(self) -> None:
        for name in self.names:
            _delete_namespace(name)

"""A real TURN server for tests: coturn (`turnserver`, Debian package `coturn`) started
on one address the test owns (127.0.0.1, or the host end of a test's veth pair), on
free ports, with its log kept so a test can count allocations, and stopped for sure.

Two ways to authenticate, as in production: the TURN REST scheme (`secret`: coturn's
`use-auth-secret` + `static-auth-secret`) or one long-term user (`user=(name, pw)`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tests.support.ports import free_port_block, free_udp_tcp_port

TURNSERVER = "turnserver"
REALM = "rayrtc.test"
RELAY_PORTS = 64  # relay ports per server: two per session, a few sessions at a time


def coturn_unavailable_reason() -> Optional[str]:
    if shutil.which(TURNSERVER) is None:
        return "coturn is not installed (apt-get install -y coturn)"
    return None


def stun_binding_ok(address: str, port: int, timeout: float = 0.3) -> bool:
    """Whether a STUN Binding request to (address, port) gets a success response."""
    txid = os.urandom(12)
    request = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + txid
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(request, (address, port))
            data, _ = s.recvfrom(2048)
        except OSError:  # timeout, or ICMP port unreachable
            return False
    return len(data) >= 20 and data[:2] == b"\x01\x01" and data[8:20] == txid


@dataclass
class Coturn:
    address: str
    port: int
    relay_ports: tuple[int, int]
    realm: str
    workdir: Path
    proc: Optional[subprocess.Popen] = None
    secret: Optional[str] = field(default=None, repr=False)
    user: Optional[tuple[str, str]] = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"turn:{self.address}:{self.port}?transport=udp"

    @property
    def log_path(self) -> Path:
        return self.workdir / "turnserver.log"

    @classmethod
    def start(
        cls, address: str, *, secret: Optional[str] = None, user: Optional[tuple[str, str]] = None,
        realm: str = REALM, timeout: float = 15.0,
    ) -> "Coturn":
        if (secret is None) == (user is None):
            raise ValueError("give coturn either a REST secret or one user")
        relay_base = free_port_block(RELAY_PORTS, address)
        self = cls(
            address=address,
            port=free_udp_tcp_port(address),
            relay_ports=(relay_base, relay_base + RELAY_PORTS - 1),
            realm=realm,
            workdir=Path(tempfile.mkdtemp(prefix="rtc-coturn-")),
            secret=secret,
            user=user,
        )
        auth = (
            ["--use-auth-secret", f"--static-auth-secret={secret}"]
            if secret is not None
            else ["--lt-cred-mech", f"--user={user[0]}:{user[1]}"]
        )
        cmd = [
            TURNSERVER,
            "-n",  # no config file
            f"--listening-ip={address}",
            f"--relay-ip={address}",
            f"--listening-port={self.port}",
            f"--min-port={self.relay_ports[0]}",
            f"--max-port={self.relay_ports[1]}",
            f"--realm={realm}",
            *auth,
            "--fingerprint",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--no-rfc5780",
            # Relays between peers on this one address: loopback peers must be allowed
            # (coturn refuses them by default), nothing else is reachable anyway.
            "--allow-loopback-peers",
            "--verbose",
            "--simple-log",
            f"--log-file={self.log_path}",
            "--no-stdout-log",
            f"--pidfile={self.workdir / 'turnserver.pid'}",
            f"--userdb={self.workdir / 'turndb'}",
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not stun_binding_ok(address, self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
                self.stop()
                raise RuntimeError(f"coturn did not come up on {address}:{self.port}: {err[-2000:]} {self.log()[-2000:]}")
        return self

    def log(self) -> str:
        # coturn may add a date suffix to the name with some options; take what is there.
        logs = sorted(self.workdir.glob("turnserver*.log"))
        return "".join(p.read_text(errors="replace") for p in logs)

    def allocations(self) -> list[str]:
        """Usernames of the allocations coturn granted, in order (from its log)."""
        return re.findall(r"session \d+: realm <[^>]*> user <([^>]*)>: incoming packet ALLOCATE processed, success", self.log())

    def refused(self) -> list[str]:
        """Usernames whose requests coturn refused (401: unknown or expired credentials).
        The first request of every allocation carries no username and is answered 401
        by design (it fetches the nonce): those are not counted."""
        return re.findall(r"user <([^>]+)>: incoming packet \S+ processed, error 401", self.log())

    def stop(self, timeout: float = 10.0) -> None:
        """Stop coturn (SIGTERM, then SIGKILL) and check that no process is left."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if proc is not None:
            if proc.stderr is not None:
                proc.stderr.close()
            assert proc.poll() is not None, "coturn still running"
            assert not _alive(proc.pid), f"coturn process {proc.pid} left behind"
        shutil.rmtree(self.workdir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def selected_pair_types(pc) -> Optional[tuple[str, str]]:
    """(local, remote) candidate types of the pair aiortc's ICE nominated for `pc`'s
    media, or None before one is. aiortc has no getSelectedCandidatePair(): this reads
    aioice's nominated pair behind the DTLS transport (test-only introspection)."""
    for transceiver in pc.getTransceivers():
        dtls = transceiver.sender.transport or transceiver.receiver.transport
        if dtls is None:
            continue
        pair = dtls.transport._connection._nominated.get(1)
        if pair is not None:
            return pair.local_candidate.type, pair.remote_candidate.type
    return None


def sdp_candidate_types(sdp: str) -> list[str]:
    """The `typ` of every candidate line in an SDP."""
    return re.findall(r"^a=candidate:.* typ (\w+)", sdp, flags=re.M)

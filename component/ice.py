"""ICE configuration shared by the browser and aiortc.

aiortc falls back to a public STUN server when given no configuration, and aioice
gathers on every non-loopback interface with no option to narrow it. Both matter:
the first sends traffic off the machine unasked, the second exposes addresses a
deployment may not want (and makes loopback-only tests impossible). So every peer
connection here is built from an explicit `IceConfig`, and the host addresses
aioice gathers on are set process-wide through the one hook aioice offers.

Deployments behind firewalls and NAT need two more knobs that aioice lacks, set the
same process-wide way by `apply_process_settings(ice)`:
- a UDP port range: aioice binds every host candidate with
  `loop.create_datagram_endpoint(local_addr=(address, 0))` (a kernel-chosen port);
  we bind those sockets ourselves inside [port_min, port_max], skipping ports in use;
- an advertised address for 1:1 NAT (a cloud VM's public IP, a Kubernetes node's
  external IP): every host candidate gets a server-reflexive twin with that address
  and the same port, exactly what a STUN server would have told aioice.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import random
import re
import socket
import types
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, Sequence

import aioice.ice
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aiortc import RTCConfiguration, RTCIceServer
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from component.turn import TurnRest

log = logging.getLogger("rayrtc.ice")


class IceServer(BaseModel):
    """A STUN or TURN server, in the browser's RTCIceServer shape."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    urls: list[str] = Field(min_length=1)
    username: Optional[str] = None
    # Kept out of reprs (logs, error messages); sent only to the browser of a session.
    credential: Optional[str] = Field(None, repr=False)

    @field_validator("urls", mode="before")
    @classmethod
    def _one_url(cls, v):
        return [v] if isinstance(v, str) else v

    @field_validator("urls")
    @classmethod
    def _scheme(cls, v: list[str]) -> list[str]:
        for url in v:
            if not re.match(r"^(stun|stuns|turn|turns):", url):
                raise ValueError(f"ICE server url must start with stun:, stuns:, turn: or turns: ({url!r})")
        return v


class IceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    servers: tuple[IceServer, ...] = ()
    transport_policy: Literal["all", "relay"] = "all"
    # Empty: aioice's default (every non-loopback interface).
    host_addresses: tuple[str, ...] = ()
    # UDP ports host candidates bind in (both or neither); None: kernel-chosen ports.
    port_min: Optional[int] = Field(None, ge=1, le=65535)
    port_max: Optional[int] = Field(None, ge=1, le=65535)
    # Public IP that maps 1:1 to this host (same ports); None: no extra candidate.
    advertised_address: Optional[str] = None
    # TURN servers with short-lived credentials minted from a shared secret, for each
    # peer connection (see component.turn); None: only the static `servers`.
    turn_rest: Optional[TurnRest] = None

    @field_validator("host_addresses")
    @classmethod
    def _ip_literals(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for address in v:
            ipaddress.ip_address(address)  # raises ValueError naming the bad value
        return v

    @field_validator("advertised_address")
    @classmethod
    def _advertised_ip(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            try:
                ipaddress.ip_address(v)
            except ValueError:
                raise ValueError(f"advertised address must be an IP address, not {v!r}") from None
        return v

    @model_validator(mode="after")
    def _range(self) -> "IceConfig":
        if (self.port_min is None) != (self.port_max is None):
            raise ValueError("set both port_min and port_max, or neither")
        if self.port_min is not None and self.port_min > self.port_max:
            raise ValueError(f"port_min ({self.port_min}) exceeds port_max ({self.port_max})")
        return self

    @property
    def port_range(self) -> Optional[tuple[int, int]]:
        return None if self.port_min is None else (self.port_min, self.port_max)

    def servers_for(self, role: str) -> tuple[IceServer, ...]:
        """The static servers, plus a TURN server with credentials minted now for
        one peer (`role` names it in the TURN server's log)."""
        if self.turn_rest is None:
            return self.servers
        minted = self.turn_rest.credentials(role)
        return (*self.servers, IceServer(urls=list(minted.urls), username=minted.username, credential=minted.credential))

    def rtc_configuration(self, role: str = "ingress") -> RTCConfiguration:
        """Always explicit, so aiortc never adds its public STUN default. Called once
        per peer connection, so minted TURN credentials are fresh for each session."""
        from aiortc.rtcconfiguration import RTCIceTransportPolicy

        return RTCConfiguration(
            iceServers=[
                RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                for s in self.servers_for(role)
            ],
            iceTransportPolicy=(
                RTCIceTransportPolicy.RELAY
                if self.transport_policy == "relay"
                else RTCIceTransportPolicy.ALL
            ),
        )

    def browser_configuration(self, mint: bool = True) -> dict:
        """The RTCConfiguration dict handed to this session's browser. `mint=False`:
        without minted TURN credentials (what may sit in a page config for hours)."""
        servers = self.servers_for("browser") if mint else self.servers
        return {
            "iceServers": [s.model_dump(exclude_none=True) for s in servers],
            "iceTransportPolicy": self.transport_policy,
        }

    @property
    def mints_credentials(self) -> bool:
        return self.turn_rest is not None


# --- process-wide settings of aioice ---------------------------------------------------
# aioice reads its host addresses from a module-level function and binds its sockets
# through the running loop, so these settings are per process: one ingress replica is
# one process with one configuration.


@dataclass(frozen=True)
class ProcessIceSettings:
    host_addresses: tuple[str, ...] = ()
    port_range: Optional[tuple[int, int]] = None
    advertised_address: Optional[str] = None


_settings = ProcessIceSettings()
_original_get_host_addresses = aioice.ice.get_host_addresses
_original_get_component_candidates = aioice.ice.Connection.get_component_candidates


def _configured_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    addresses = _settings.host_addresses
    if not addresses:
        return _original_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    return [a for a in addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


def bind_udp_in_range(address: str, port_min: int, port_max: int) -> socket.socket:
    """A UDP socket bound to `address` on a free port in [port_min, port_max].

    Starts at a random port of the range (so processes sharing it rarely collide) and
    walks it once; raises OSError(EADDRINUSE) when every port is taken.
    """
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    count = port_max - port_min + 1
    start = random.randrange(count)
    for i in range(count):
        port = port_min + (start + i) % count
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((address, port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                continue
            raise
        sock.setblocking(False)
        return sock
    raise OSError(errno.EADDRINUSE, f"no free UDP port on {address} in {port_min}-{port_max}")


class _PortRangeLoop:
    """The running loop as aioice sees it while a port range is set: identical,
    except that a datagram endpoint asked for port 0 gets a port from the range."""

    def __init__(self, loop: asyncio.AbstractEventLoop, port_range: tuple[int, int]) -> None:
        self._loop = loop
        self._port_range = port_range

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_datagram_endpoint(self, protocol_factory: Callable[[], Any], local_addr=None, **kwargs):
        if local_addr is None or local_addr[1] != 0 or "sock" in kwargs:
            return await self._loop.create_datagram_endpoint(protocol_factory, local_addr=local_addr, **kwargs)
        sock = bind_udp_in_range(local_addr[0], *self._port_range)
        try:
            return await self._loop.create_datagram_endpoint(protocol_factory, sock=sock, **kwargs)
        except BaseException:
            sock.close()
            raise


class _AsyncioForAioice(types.ModuleType):
    """`asyncio` as aioice.ice imports it: the real module, but `get_running_loop()`
    hands out the port-range loop while a range is configured. This is the seam: it
    changes where host candidates bind and nothing else (TURN allocations live in
    aioice.turn, which keeps the real asyncio)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    def get_running_loop() -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        port_range = _settings.port_range
        return loop if port_range is None else _PortRangeLoop(loop, port_range)  # type: ignore[return-value]


def advertised_candidate(host: Candidate, address: str) -> Candidate:
    """The server-reflexive twin of a host candidate behind a 1:1 NAT."""
    return Candidate(
        foundation=candidate_foundation("srflx", "udp", host.host),
        component=host.component,
        transport=host.transport,
        priority=candidate_priority(host.component, "srflx"),
        host=address,
        port=host.port,
        type="srflx",
        related_address=host.host,
        related_port=host.port,
    )


async def _get_component_candidates(self, component: int, addresses: list[str], timeout: int = 5):
    candidates = await _original_get_component_candidates(self, component, addresses, timeout)
    advertised = _settings.advertised_address
    if advertised:
        version = ipaddress.ip_address(advertised).version
        candidates += [
            advertised_candidate(c, advertised)
            for c in candidates
            if c.type == "host" and ipaddress.ip_address(c.host).version == version
        ]
    return candidates


def _install() -> None:
    aioice.ice.get_host_addresses = _configured_host_addresses
    aioice.ice.Connection.get_component_candidates = _get_component_candidates
    if not isinstance(aioice.ice.asyncio, _AsyncioForAioice):
        aioice.ice.asyncio = _AsyncioForAioice("asyncio")


def current_process_settings() -> ProcessIceSettings:
    return _settings


def restore_process_settings(settings: ProcessIceSettings) -> None:
    """Put back what `current_process_settings()` returned (tests)."""
    global _settings
    _settings = settings
    _install()


ADVERTISED_ADDRESS_ENV = "RAYRTC_ICE_ADVERTISED_ADDRESS"


def node_advertised_address() -> Optional[str]:
    """The node's own public address from `RAYRTC_ICE_ADVERTISED_ADDRESS`, if set.

    One app spans several ingress nodes, each behind its own 1:1 NAT address; an
    address set in the node's environment (where `ray start` runs, inherited by its
    workers) wins over the app-wide `advertised_address`.
    """
    value = os.environ.get(ADVERTISED_ADDRESS_ENV, "").strip()
    if not value:
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{ADVERTISED_ADDRESS_ENV} must be an IP address, not {value!r}") from None
    return value


def apply_process_settings(ice: IceConfig) -> ProcessIceSettings:
    """Apply `ice`'s host addresses, UDP port range and advertised address (or the
    node's `RAYRTC_ICE_ADVERTISED_ADDRESS`) to every peer connection this process
    creates from now on; returns the previous settings.

    Call it once per process (the ingress replica) before the first offer; an empty
    field restores aioice's default for that knob.
    """
    previous = _settings
    restore_process_settings(
        ProcessIceSettings(
            host_addresses=tuple(ice.host_addresses),
            port_range=ice.port_range,
            advertised_address=node_advertised_address() or ice.advertised_address,
        )
    )
    return previous


def set_host_addresses(addresses: Sequence[str]) -> None:
    """Restrict the addresses aioice gathers host candidates on, for this process,
    leaving the port range and advertised address as they are. Passing () restores
    aioice's default."""
    global _settings
    _settings = ProcessIceSettings(
        host_addresses=tuple(addresses),
        port_range=_settings.port_range,
        advertised_address=_settings.advertised_address,
    )
    _install()


def strip_mdns_candidates(sdp: str) -> str:
    """Drop `.local` candidates: resolving them makes aioice send mDNS multicast."""
    lines = sdp.splitlines(keepends=True)
    return "".join(
        line
        for line in lines
        if not (line.startswith("a=candidate:") and len(line.split()) > 4 and line.split()[4].endswith(".local"))
    )

"""ICE configuration shared by the browser and aiortc.

aiortc falls back to a public STUN server when given no configuration, and aioice
gathers on every non-loopback interface with no option to narrow it. Both matter:
the first sends traffic off the machine unasked, the second exposes addresses a
deployment may not want (and makes loopback-only tests impossible). So every peer
connection here is built from an explicit `IceConfig`.

Three of its knobs aioice only takes per process (`ProcessIceSettings`):
- host addresses: aioice gathers on what `aioice.ice.get_host_addresses` returns;
  we replace that function;
- a UDP port range: aioice binds every host candidate with
  `asyncio.get_running_loop().create_datagram_endpoint(local_addr=(address, 0))`
  (a kernel-chosen port); the `asyncio` that aioice.ice sees hands out a loop that
  binds those sockets inside [port_min, port_max], skipping ports in use;
- an advertised address for 1:1 NAT (a cloud VM's public IP, a Kubernetes node's
  external IP): `Connection.get_component_candidates` is wrapped so every host
  candidate gets a server-reflexive twin with that address and the same port,
  exactly what a STUN server would have told aioice.

Process-wide state needs one owner, or the last writer silently wins. So:
- The host claims it: `claim_process_ice(ice, owner=...)`. The first claim installs
  the seam; a later claim with the same settings is a no-op; a different one raises
  `ProcessIceConflict`, naming both owners and the settings that differ. Settings are
  compared whole: a second claim that only adds a port range is a conflict too.
  Hosts: the ingress replica (one claim in `Ingress.__init__`); in plain Gradio,
  `WebRTC.webrtc_stream` of a component whose `IceConfig` sets any of the three knobs
  (so the first such component owns the process and a conflicting second one fails
  while the app is being built, before launch); a test session (tests/conftest.py);
  a bench client. A component whose `IceConfig` sets none of them claims nothing and
  its connections use whatever the host claimed.
- `StreamServer` only checks (`check_process_ice`): an `IceConfig` whose process-wide
  settings are not the ones in force is refused, never applied behind the host's back.
- `release_process_ice()` drops the claim and gives aioice its own functions back;
  `scoped_process_ice(...)` sets the current claim aside for a block (tests that host
  another configuration for a while).
- The seam depends on aioice internals, so the aioice version is bounded in
  pyproject.toml, every first claim checks those internals are still there
  (`check_aioice_seam`), and tests/test_cluster_ice.py pins their behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import ipaddress
import logging
import os
import random
import re
import socket
import threading
import types
from dataclasses import dataclass, fields
from typing import Any, Callable, Iterator, Literal, Optional

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

    @property
    def sets_process_settings(self) -> bool:
        """Whether this config sets any knob aioice only takes per process (host
        addresses, port range, advertised address): see `claim_process_ice`."""
        return bool(self.host_addresses or self.port_range or self.advertised_address)


# --- process-wide settings of aioice ---------------------------------------------------
# aioice reads its host addresses from a module-level function and binds its sockets
# through the running loop, so these settings are per process: one ingress replica is
# one process with one configuration, and exactly one claim (see the module docstring).

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


@dataclass(frozen=True)
class ProcessIceSettings:
    """The part of an `IceConfig` that aioice takes per process. Empty fields: aioice's
    own behaviour for that knob (every non-loopback interface, kernel-chosen ports, no
    advertised address)."""

    host_addresses: tuple[str, ...] = ()
    port_range: Optional[tuple[int, int]] = None
    advertised_address: Optional[str] = None

    @classmethod
    def of(cls, ice: IceConfig) -> "ProcessIceSettings":
        """`ice`'s process-wide settings; the node's `RAYRTC_ICE_ADVERTISED_ADDRESS`
        wins over its advertised address."""
        return cls(
            host_addresses=tuple(ice.host_addresses),
            port_range=ice.port_range,
            advertised_address=node_advertised_address() or ice.advertised_address,
        )

    def differences(self, other: "ProcessIceSettings") -> list[str]:
        """`name: mine != theirs` for each field that differs."""
        return [
            f"{f.name}: {getattr(self, f.name)!r} != {getattr(other, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]


@dataclass(frozen=True)
class IceClaim:
    """Who set this process's ICE settings, and to what."""

    settings: ProcessIceSettings
    owner: str


class ProcessIceConflict(RuntimeError):
    """ICE settings for a process that has other ones (or, for a `StreamServer`, none
    claimed): refused, nothing changed."""

    def __init__(self, held: Optional[IceClaim], wanted: IceClaim) -> None:
        self.held, self.wanted = held, wanted
        if held is None:
            message = (
                f"{wanted.owner} needs process-wide ICE settings {wanted.settings}, but none "
                "were claimed in this process: the host claims them first with "
                "component.ice.claim_process_ice(ice, owner=...) (WebRTC.webrtc_stream and "
                "the ingress replica do)."
            )
        else:
            message = (
                f"{wanted.owner} asked for process-wide ICE settings that differ from those "
                f"{held.owner} set ({'; '.join(held.settings.differences(wanted.settings))}). "
                "aioice applies host addresses, UDP port range and advertised address to "
                "every peer connection of a process, so a process has one such "
                "configuration: give both the same settings, leave them out of the second "
                "(it then uses the first one's), or serve the second from its own process."
            )
        super().__init__(message)


_claim: Optional[IceClaim] = None
_claim_lock = threading.Lock()
# aioice's own functions (None if a new aioice lacks them: `check_aioice_seam` says so).
_ORIGINAL_GET_HOST_ADDRESSES = getattr(aioice.ice, "get_host_addresses", None)
_ORIGINAL_GET_COMPONENT_CANDIDATES = getattr(aioice.ice.Connection, "get_component_candidates", None)
# What `_get_component_candidates` is called with, and passes on.
_COMPONENT_CANDIDATES_PARAMETERS = ["self", "component", "addresses", "timeout"]


def _settings_in_force() -> ProcessIceSettings:
    claim = _claim
    return ProcessIceSettings() if claim is None else claim.settings


def _configured_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    addresses = _settings_in_force().host_addresses
    if not addresses:
        return _ORIGINAL_GET_HOST_ADDRESSES(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
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
        port_range = _settings_in_force().port_range
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
    candidates = await _ORIGINAL_GET_COMPONENT_CANDIDATES(self, component, addresses, timeout)
    advertised = _settings_in_force().advertised_address
    if advertised:
        version = ipaddress.ip_address(advertised).version
        candidates += [
            advertised_candidate(c, advertised)
            for c in candidates
            if c.type == "host" and ipaddress.ip_address(c.host).version == version
        ]
    return candidates


def check_aioice_seam() -> None:
    """Raise RuntimeError naming what is missing if aioice no longer has what the seam
    replaces (checked at every first claim, so a changed aioice fails at startup instead
    of silently ignoring the port range)."""
    problems = []
    if not callable(_ORIGINAL_GET_HOST_ADDRESSES):
        problems.append("aioice.ice.get_host_addresses is gone")
    if _ORIGINAL_GET_COMPONENT_CANDIDATES is None:
        problems.append("aioice.ice.Connection.get_component_candidates is gone")
    else:
        parameters = list(inspect.signature(_ORIGINAL_GET_COMPONENT_CANDIDATES).parameters)
        if parameters != _COMPONENT_CANDIDATES_PARAMETERS:
            problems.append(
                "aioice.ice.Connection.get_component_candidates takes "
                f"{parameters}, not {_COMPONENT_CANDIDATES_PARAMETERS}"
            )
    if not isinstance(getattr(aioice.ice, "asyncio", None), types.ModuleType):
        problems.append("aioice.ice no longer has the `asyncio` module attribute it reaches the loop through")
    if problems:
        raise RuntimeError(
            f"aioice {getattr(aioice, '__version__', '?')} changed what component.ice patches: "
            + "; ".join(problems)
        )


def _install() -> None:
    aioice.ice.get_host_addresses = _configured_host_addresses
    aioice.ice.Connection.get_component_candidates = _get_component_candidates
    aioice.ice.asyncio = _AsyncioForAioice("asyncio")


def _uninstall() -> None:
    aioice.ice.get_host_addresses = _ORIGINAL_GET_HOST_ADDRESSES
    aioice.ice.Connection.get_component_candidates = _ORIGINAL_GET_COMPONENT_CANDIDATES
    aioice.ice.asyncio = asyncio


def claim_process_ice(ice: IceConfig | ProcessIceSettings, owner: str) -> ProcessIceSettings:
    """Make `ice`'s host addresses, UDP port range and advertised address (or the
    node's `RAYRTC_ICE_ADVERTISED_ADDRESS`) hold for every peer connection this process
    creates from now on, on behalf of `owner` (named in errors and logs).

    The first claim installs them; a claim of the same settings is a no-op; a claim of
    different settings raises `ProcessIceConflict` and changes nothing. Call it in the
    host before the first offer. Returns the settings in force.
    """
    global _claim
    settings = ice if isinstance(ice, ProcessIceSettings) else ProcessIceSettings.of(ice)
    with _claim_lock:
        if _claim is None:
            check_aioice_seam()
            _claim = IceClaim(settings, owner)
            _install()
            log.info("process ICE settings %s, owned by %s", settings, owner)
        elif _claim.settings != settings:
            raise ProcessIceConflict(_claim, IceClaim(settings, owner))
    return settings


def process_ice_claim() -> Optional[IceClaim]:
    """The claim in force, or None (aioice's own behaviour)."""
    return _claim


def release_process_ice() -> Optional[IceClaim]:
    """Drop the claim and give aioice back its own functions; returns the claim that
    was released. For tests and tools that host one configuration after another."""
    global _claim
    with _claim_lock:
        released, _claim = _claim, None
        if released is not None:
            _uninstall()
    return released


@contextlib.contextmanager
def scoped_process_ice(ice: IceConfig | ProcessIceSettings | None, owner: str) -> Iterator[Optional[ProcessIceSettings]]:
    """Set the current claim aside, claim `ice` for the block (None: leave the process
    unclaimed), then release whatever is claimed and reinstate the claim set aside.
    For tests that host another configuration for a while."""
    previous = release_process_ice()
    try:
        yield None if ice is None else claim_process_ice(ice, owner)
    finally:
        release_process_ice()
        if previous is not None:
            claim_process_ice(previous.settings, previous.owner)


def check_process_ice(ice: IceConfig, user: str) -> None:
    """Refuse an `IceConfig` whose process-wide settings (if it sets any) are not the
    ones in force: applying them here would override the host's, ignoring them would
    drop them silently."""
    if not ice.sets_process_settings:
        return
    wanted = ProcessIceSettings.of(ice)
    claim = _claim
    if claim is None:
        raise ProcessIceConflict(None, IceClaim(wanted, user))
    if claim.settings != wanted:
        raise ProcessIceConflict(claim, IceClaim(wanted, user))


def strip_mdns_candidates(sdp: str) -> str:
    """Drop `.local` candidates: resolving them makes aioice send mDNS multicast."""
    lines = sdp.splitlines(keepends=True)
    return "".join(
        line
        for line in lines
        if not (line.startswith("a=candidate:") and len(line.split()) > 4 and line.split()[4].endswith(".local"))
    )

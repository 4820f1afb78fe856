"""ICE configuration shared by the browser and aiortc.

aiortc falls back to a public STUN server when given no configuration, and aioice
gathers on every non-loopback interface with no option to narrow it. Both matter:
the first sends traffic off the machine unasked, the second exposes addresses a
deployment may not want (and makes loopback-only tests impossible). So every peer
connection here is built from an explicit `IceConfig`, and the host addresses
aioice gathers on are set process-wide through the one hook aioice offers.
"""

from __future__ import annotations

import re
from typing import Literal, Optional, Sequence

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer
from pydantic import BaseModel, ConfigDict, Field, field_validator


class IceServer(BaseModel):
    """A STUN or TURN server, in the browser's RTCIceServer shape."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    urls: list[str] = Field(min_length=1)
    username: Optional[str] = None
    credential: Optional[str] = None

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

    def rtc_configuration(self) -> RTCConfiguration:
        """Always explicit, so aiortc never adds its public STUN default."""
        from aiortc.rtcconfiguration import RTCIceTransportPolicy

        return RTCConfiguration(
            iceServers=[
                RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                for s in self.servers
            ],
            iceTransportPolicy=(
                RTCIceTransportPolicy.RELAY
                if self.transport_policy == "relay"
                else RTCIceTransportPolicy.ALL
            ),
        )

    def browser_configuration(self) -> dict:
        """The RTCConfiguration dict handed to this session's browser."""
        return {
            "iceServers": [s.model_dump(exclude_none=True) for s in self.servers],
            "iceTransportPolicy": self.transport_policy,
        }


_host_addresses: tuple[str, ...] = ()
_original_get_host_addresses = aioice.ice.get_host_addresses


def _configured_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if not _host_addresses:
        return _original_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    return [a for a in _host_addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


def set_host_addresses(addresses: Sequence[str]) -> None:
    """Restrict the addresses aioice gathers host candidates on, for this process.

    aioice reads them from a module-level function at gather time; this is the only
    seam it offers, so the setting is per process (one ingress replica = one process,
    one configuration). Passing () restores aioice's default.
    """
    global _host_addresses
    _host_addresses = tuple(addresses)
    aioice.ice.get_host_addresses = _configured_host_addresses


def strip_mdns_candidates(sdp: str) -> str:
    """Drop `.local` candidates: resolving them makes aioice send mDNS multicast."""
    lines = sdp.splitlines(keepends=True)
    return "".join(
        line
        for line in lines
        if not (line.startswith("a=candidate:") and len(line.split()) > 4 and line.split()[4].endswith(".local"))
    )

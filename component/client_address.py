"""Who is asking: the client address that per-client limits are keyed on.

Behind a load balancer or a Kubernetes ingress every request's socket peer is the
proxy, so a per-address limit would put all users in one bucket. A proxy's own
`X-Forwarded-For` / `Forwarded` header names the real client, but anyone can send
that header: it is believed only when the socket peer is a proxy the operator listed
(`trusted_proxies`, like uvicorn's `forwarded_allow_ips`). Off by default.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Iterable, Mapping, Optional, Sequence, Union

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

# `for=` in an RFC 7239 `Forwarded` element: a token or a quoted string, IPv6 in brackets.
_FORWARDED_FOR = re.compile(r'(?i)(?:^|;)\s*for\s*=\s*("?)([^";,]*)\1')


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """`10.0.0.0/8`, `192.0.2.7` or `::1` -> networks; raises ValueError naming a bad entry."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {entry!r}") from None
    return tuple(networks)


def _address(text: str) -> Optional[ipaddress._BaseAddress]:
    text = text.strip()
    if text.startswith("["):  # [v6]:port or [v6]
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None  # "unknown", an obfuscated `_hidden` identifier, garbage


def _forwarded_chain(headers: Mapping[str, str]) -> list[str]:
    """Client-side-first list of hop addresses the proxies appended. `Forwarded` is
    used when present (it is the standard); else `X-Forwarded-For`."""
    forwarded = headers.get("forwarded")
    if forwarded:
        return [m.group(2) for element in forwarded.split(",") for m in [_FORWARDED_FOR.search(element)] if m]
    xff = headers.get("x-forwarded-for")
    return [part for part in (xff or "").split(",") if part.strip()]


class ClientAddress:
    """Resolves the address a request comes from, trusting only the listed proxies."""

    def __init__(self, trusted_proxies: Sequence[str] = ()) -> None:
        self.trusted = parse_networks(trusted_proxies)

    def _is_trusted(self, address: Optional[ipaddress._BaseAddress]) -> bool:
        return address is not None and any(address in net for net in self.trusted)

    def resolve(self, peer: Optional[str], headers: Mapping[str, str]) -> Optional[str]:
        """The socket peer, or, when it is a trusted proxy, the nearest hop in the
        forwarding chain that is not itself a trusted proxy (walking from the right,
        the entries our own proxies appended, so a client cannot spoof its way past)."""
        if peer is None or not self.trusted or not self._is_trusted(_address(peer)):
            return peer
        for hop in reversed(_forwarded_chain(headers)):
            address = _address(hop)
            if address is None:
                return peer  # a hop we cannot read: key on what we know for sure
            if not self._is_trusted(address):
                return str(address)
        return peer

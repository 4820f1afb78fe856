"""Loopback ports for tests and benchmarks: nothing here ever listens on another address.

The bench imports this too (tests/ and bench/ are both repo-only tools), so it stays
standard-library only."""

from __future__ import annotations

import random
import socket

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def free_udp_tcp_port(address: str = LOOPBACK) -> int:
    """A port free for both UDP and TCP on `address` (coturn listens on both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((address, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((address, port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no port free for both UDP and TCP on {address}")


def free_port_block(size: int, address: str = LOOPBACK) -> int:
    """A base port with `size` consecutive UDP ports free on `address` right now (for
    a pinned ICE port range, or a TURN server's relay ports)."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - size)
        socks = []
        try:
            for port in range(base, base + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((address, port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {size} consecutive free UDP ports on {address}")

"""Loopback ports for tests and benchmarks: nothing here ever listens on another address.

The bench imports this too (tests/ and bench/ are both repo-only tools), so it stays
standard-library only."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]

"""A client that connects, streams, reports its id, then waits to be SIGKILLed: a
browser tab that disappears without closing anything."""

from __future__ import annotations

import asyncio
import sys

from component.ice import IceConfig, claim_process_ice
from tests.support.client import StreamClient
from tests.support.images import photo


async def main(url: str) -> None:
    claim_process_ice(IceConfig(host_addresses=("127.0.0.1",)), owner="vanishing_client")
    client = StreamClient(url, photo("astronaut"), fps=10)
    await client.connect()
    await client.wait_connected()
    await client.wait_frames(3)
    print(client.webrtc_id, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

"""HTTP routes for a stream: `POST /webrtc/offer` (FastRTC's protocol) and a
`GET /webrtc/stats` snapshot. Mount them on any FastAPI/Starlette app."""

from __future__ import annotations

import asyncio
import os
import threading

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from component.protocol import MAX_OFFER_BYTES, ErrorCode, OfferError
from component.server import StreamServer


async def _read_capped(request: Request, cap: int) -> bytes:
    """Read the body but stop at `cap` bytes, so a huge upload costs us nothing."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise OfferError(ErrorCode.OFFER_TOO_LARGE, f"offer body exceeds {cap} bytes", limit=cap)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise OfferError(ErrorCode.OFFER_TOO_LARGE, f"offer body exceeds {cap} bytes", limit=cap)
    return bytes(body)


def process_snapshot() -> dict[str, int]:
    """What a leak would grow: open descriptors, threads and asyncio tasks."""
    try:
        fds = len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux
        fds = -1
    return {"fds": fds, "threads": threading.active_count(), "tasks": len(asyncio.all_tasks())}


def offer_router(server: StreamServer, prefix: str = "/webrtc") -> APIRouter:
    router = APIRouter(prefix=prefix)

    @router.post("/offer")
    async def offer(request: Request) -> JSONResponse:
        try:
            body = await _read_capped(request, MAX_OFFER_BYTES)
            answer = await server.offer(body)
        except OfferError as err:
            return JSONResponse(err.body(), status_code=err.http_status)
        return JSONResponse(answer.model_dump())

    @router.get("/stats")
    async def stats() -> dict:
        return {**server.stats(), "process": process_snapshot()}

    return router


def mount_offer_routes(app: FastAPI, server: StreamServer, prefix: str = "/webrtc") -> None:
    app.include_router(offer_router(server, prefix))

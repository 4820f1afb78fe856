"""HTTP routes for a stream: `POST /webrtc/offer` (FastRTC's protocol), a public
`GET /webrtc/stats` of aggregate counts, and `GET /webrtc/sessions`, per-session detail
for operators only. Mount them on any FastAPI/Starlette app.

Nothing here names a session to a stranger or changes one: a session's inputs travel
only on its own data channel, which DTLS ties to the browser that opened it."""

from __future__ import annotations

import asyncio
import hmac
import os
import threading
from typing import Optional

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
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux
        fds = rss = -1
    return {
        "fds": fds,
        "threads": threading.active_count(),
        "tasks": len(asyncio.all_tasks()),
        "rss_bytes": rss,
    }


def _check_token(request: Request, token: Optional[str]) -> None:
    if token is None:
        return
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise OfferError(ErrorCode.UNAUTHORIZED, "missing or wrong bearer token")


def _check_admin(request: Request, admin_token: Optional[str]) -> None:
    if admin_token is None:
        raise OfferError(
            ErrorCode.FORBIDDEN, "per-session detail is off: start the app with an admin_token to see it"
        )
    _check_token(request, admin_token)


def offer_router(
    server: StreamServer,
    prefix: str = "/webrtc",
    auth_token: Optional[str] = None,
    admin_token: Optional[str] = None,
) -> APIRouter:
    """`auth_token`, when set, must come as `Authorization: Bearer <token>` on the offer
    and the aggregate stats. `/sessions` (session ids, per-session counters, process
    snapshot) needs `admin_token` as the bearer and is refused (403) without one."""
    router = APIRouter(prefix=prefix)

    @router.post("/offer")
    async def offer(request: Request) -> JSONResponse:
        try:
            _check_token(request, auth_token)
            body = await _read_capped(request, MAX_OFFER_BYTES)
            peer = request.client.host if request.client else None
            client = server.client_address.resolve(peer, request.headers)
            answer = await server.offer(body, client=client)
        except OfferError as err:
            return JSONResponse(err.body(), status_code=err.http_status)
        return JSONResponse(answer.model_dump())

    @router.get("/stats")
    async def stats(request: Request) -> JSONResponse:
        try:
            _check_token(request, auth_token)
        except OfferError as err:
            return JSONResponse(err.body(), status_code=err.http_status)
        return JSONResponse(server.stats())

    @router.get("/sessions")
    async def sessions(request: Request) -> JSONResponse:
        try:
            _check_admin(request, admin_token)
        except OfferError as err:
            return JSONResponse(err.body(), status_code=err.http_status)
        return JSONResponse({**server.session_stats(), "process": process_snapshot()})

    return router


def mount_offer_routes(
    app: FastAPI,
    server: StreamServer,
    prefix: str = "/webrtc",
    auth_token: Optional[str] = None,
    admin_token: Optional[str] = None,
) -> None:
    app.include_router(offer_router(server, prefix, auth_token, admin_token))

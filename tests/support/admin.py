"""The admin view of a test app: every test app is deployed with `ADMIN_TOKEN`, so
tests can read per-session detail from `GET /webrtc/sessions` (the public
`/webrtc/stats` has counts only)."""

from __future__ import annotations

ADMIN_TOKEN = "test-admin-token"
ADMIN_HEADERS = {"authorization": f"Bearer {ADMIN_TOKEN}"}


async def admin_stats(base_url: str, headers: dict | None = None) -> dict:
    """Per-session detail and the process snapshot of the replica that answers."""
    import httpx

    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        resp = await http.get(f"{base_url}/webrtc/sessions", headers={**(headers or {}), **ADMIN_HEADERS})
    resp.raise_for_status()
    return resp.json()


async def session_stats(base_url: str, webrtc_id: str) -> dict | None:
    """One session's entry in `admin_stats`, or None once it is gone."""
    body = await admin_stats(base_url)
    return next((s for s in body["sessions"] if s["webrtc_id"] == webrtc_id), None)

"""The offer protocol, kept exactly as FastRTC's `POST /webrtc/offer` so existing
clients, our benchmarks and tests all speak it.

Request  `{"sdp": str, "type": "offer", "webrtc_id": str}`
Answer   `{"sdp": str, "type": "answer", "webrtc_id": str}`
Failure  `{"status": "failed", "meta": {"error": CODE, ...}}` with a fitting HTTP status.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Browsers' offers are 3-8 KiB; anything near this is not a real offer.
MAX_OFFER_BYTES = 64 * 1024


class ErrorCode(str, Enum):
    INVALID_OFFER = "invalid_offer"
    CONNECTION_ALREADY_EXISTS = "connection_already_exists"
    OFFER_TOO_LARGE = "offer_too_large"
    CONCURRENCY_LIMIT_REACHED = "concurrency_limit_reached"
    RATE_LIMITED = "rate_limited"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NO_MEDIA_PORT = "no_media_port"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_OFFER: 400,
    ErrorCode.CONNECTION_ALREADY_EXISTS: 409,
    ErrorCode.OFFER_TOO_LARGE: 413,
    ErrorCode.CONCURRENCY_LIMIT_REACHED: 503,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NO_MEDIA_PORT: 503,
}


class OfferRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sdp: str = Field(min_length=1, max_length=MAX_OFFER_BYTES)
    type: Literal["offer"]
    # Ids become dict keys, log fields and data-channel payloads: keep them boring.
    webrtc_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")


class OfferAnswer(BaseModel):
    sdp: str
    type: Literal["answer"] = "answer"
    webrtc_id: str


class OfferError(Exception):
    """A refused offer; carries the protocol's code and extra meta (e.g. `limit`)."""

    def __init__(self, code: ErrorCode, message: str, **meta: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.meta = meta

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def body(self) -> dict[str, Any]:
        return {
            "status": "failed",
            "meta": {"error": self.code.value, "message": self.message, **self.meta},
        }


def parse_offer(raw: bytes | str | dict) -> OfferRequest:
    """Decode and validate an offer body, turning every defect into `invalid_offer`."""
    if isinstance(raw, (bytes, str)):
        if len(raw) > MAX_OFFER_BYTES:
            raise OfferError(
                ErrorCode.OFFER_TOO_LARGE,
                f"offer body exceeds {MAX_OFFER_BYTES} bytes",
                limit=MAX_OFFER_BYTES,
            )
        try:
            raw = json.loads(raw)
        except RecursionError:
            # Deep nesting (e.g. 30,000 `[`) exhausts the decoder's recursion, not the JSON syntax.
            raise OfferError(ErrorCode.INVALID_OFFER, "body nests too deeply to be an offer") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise OfferError(ErrorCode.INVALID_OFFER, f"body is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise OfferError(ErrorCode.INVALID_OFFER, "body must be a JSON object")
    try:
        offer = OfferRequest.model_validate(raw)
    except ValidationError as exc:
        fields = ", ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise OfferError(ErrorCode.INVALID_OFFER, f"bad offer fields ({fields})") from None
    if "m=video" not in offer.sdp:
        raise OfferError(ErrorCode.INVALID_OFFER, "offer has no video section (m=video)")
    return offer

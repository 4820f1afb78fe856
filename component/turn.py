"""Short-lived TURN credentials: the TURN REST scheme.

A TURN password written into the page config is readable by every visitor and lasts
until someone rotates it. The TURN REST scheme (coturn: `use-auth-secret` with
`static-auth-secret=S`) replaces it with credentials the app mints on demand from a
secret it shares with the TURN server:

    username   = "<expiry, unix seconds>:<label>"
    credential = base64(HMAC-SHA1(secret, username))

The TURN server recomputes the HMAC from the username, so it needs no user list, and
refuses a username whose expiry has passed. Only minted pairs ever leave the app; the
secret stays in the replica (a `SecretStr`, masked in every repr).

coturn checks the expiry on every authenticated request of an allocation (refreshes,
permissions, channel binds), not only the first: a lifetime shorter than a session
ends that session's relay when its first refresh after the expiry is refused. So the
lifetime must outlast the longest session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

# coturn splits the username at its REST API separator (":" by default): the label
# must not contain one.
_LABEL = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def mint(secret: str, label: str, ttl_s: float, now: Optional[float] = None) -> tuple[str, str]:
    """(username, credential) valid until `now + ttl_s` (unix seconds)."""
    if not _LABEL.match(label):
        raise ValueError(f"TURN username label must match {_LABEL.pattern}, not {label!r}")
    expiry = int((time.time() if now is None else now) + ttl_s)
    username = f"{expiry}:{label}"
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True)
class TurnCredentials:
    urls: tuple[str, ...]
    username: str
    credential: str

    def __repr__(self) -> str:  # the credential stays out of logs
        return f"TurnCredentials(urls={list(self.urls)!r}, username={self.username!r})"


class TurnRest(BaseModel):
    """The TURN servers that take REST credentials, the shared secret and the lifetime."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    urls: tuple[str, ...] = Field(min_length=1)
    secret: SecretStr
    ttl_s: int = Field(3600, ge=10, le=7 * 86400)
    # Prefix of every minted username; coturn logs it with each allocation.
    label: str = "rayrtc"

    @field_validator("urls", mode="before")
    @classmethod
    def _one_url(cls, v):
        return (v,) if isinstance(v, str) else v

    @field_validator("urls")
    @classmethod
    def _turn_scheme(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for url in v:
            if not re.match(r"^turns?:", url):
                raise ValueError(f"TURN REST urls must start with turn: or turns: ({url!r})")
        return v

    @field_validator("secret")
    @classmethod
    def _not_empty(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value():
            raise ValueError("the TURN secret must not be empty")
        return v

    @field_validator("label")
    @classmethod
    def _label(cls, v: str) -> str:
        if not _LABEL.match(v):
            raise ValueError(f"TURN username label must match {_LABEL.pattern}, not {v!r}")
        return v

    def credentials(self, role: str, now: Optional[float] = None) -> TurnCredentials:
        """Fresh credentials for one peer; `role` (e.g. "browser", "ingress") ends
        up in the username, so the TURN server's log tells the two ends apart."""
        username, credential = mint(self.secret.get_secret_value(), f"{self.label}-{role}", self.ttl_s, now)
        return TurnCredentials(urls=self.urls, username=username, credential=credential)

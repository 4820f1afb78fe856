"""Where a model's weights come from: a local path, or a URL cached on disk.

Replicas start on machines that may be offline, so a URL is fetched once into a cache
(`$RAYRTC_CACHE`, else `~/.cache/rayrtc/models`) and verified by sha256; after that no
network is needed. Every failure is a `ModelLoadError` that says what to pass instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

from deployments.models.base import ModelLoadError

log = logging.getLogger("rayrtc.models")

DOWNLOAD_TIMEOUT_S = 10.0
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """The weights cache; `RAYRTC_CACHE` overrides it (read at each call)."""
    env = os.environ.get("RAYRTC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rayrtc" / "models"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_weights(
    path: Optional[str],
    url: Optional[str] = None,
    sha256: Optional[str] = None,
    *,
    what: str = "weights",
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """A readable local file holding the weights, downloading `url` only on a cache miss.

    A given `path` wins over `url`; `sha256`, when set, is checked for both.
    """
    expected = sha256.lower() if sha256 else None
    if path:
        local = Path(path).expanduser()
        if not local.is_file():
            raise ModelLoadError(f"{what} file not found: {local}")
        if expected and sha256_of(local) != expected:
            raise ModelLoadError(f"{what} file {local} does not match sha256 {expected}")
        return local
    if not url:
        raise ModelLoadError(f"no {what}: set `path` (a local file) or `url`")
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise ModelLoadError(f"{what} url must be http(s), got {url!r}; pass a local `path`")
    cached = cache_dir() / _cache_name(url, expected)
    if cached.is_file():
        if expected is None or sha256_of(cached) == expected:
            log.info("%s: cache hit %s", what, cached)
            return cached
        log.warning("%s: cached %s has the wrong sha256; downloading again", what, cached)
    if expected is None:
        log.warning("%s: downloading %s without a sha256 to check it against", what, url)
    _download(url, cached, expected, what=what, timeout=timeout)
    return cached


def _cache_name(url: str, sha256: Optional[str]) -> str:
    base = Path(urllib.parse.urlsplit(url).path).name or "weights"
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base)[-80:]
    key = sha256 or hashlib.sha256(url.encode()).hexdigest()
    return f"{key[:16]}-{base}"


def _download(url: str, dest: Path, expected: Optional[str], *, what: str, timeout: float) -> None:
    """Stream into a temp file beside `dest`, check the hash, then rename atomically."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelLoadError(f"cannot create the weights cache {dest.parent}: {e}") from e
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
        got = digest.hexdigest()
        if expected and got != expected:
            raise ModelLoadError(f"{what} from {url} has sha256 {got}, expected {expected}")
        os.replace(tmp, dest)
        log.info("%s: downloaded %s to %s", what, url, dest)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise ModelLoadError(
            f"cannot download {what} from {url} ({e}) and there is no cached copy in "
            f"{dest.parent}; if this machine is offline, pass a local `path` instead"
        ) from e
    finally:
        tmp.unlink(missing_ok=True)

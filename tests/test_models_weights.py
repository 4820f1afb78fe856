"""Weights by path or URL: cache hits, offline failures and sha256 checks.

No test leaves the machine: the "offline" URL is a closed port on 127.0.0.1 and the
download test serves a file from a loopback HTTP server started here.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from deployments.models import ModelLoadError
from deployments.models.weights import _cache_name, resolve_weights

BLOB = b"pretend these are weights\n" * 100
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("RAYRTC_CACHE", str(d))
    return d


@pytest.fixture
def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/models/yolox_nano.onnx"


@pytest.fixture
def served(tmp_path):
    """A loopback HTTP server for one directory; yields (base url, directory)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_models_weights_local_path(tmp_path):
    f = tmp_path / "m.onnx"
    f.write_bytes(BLOB)
    assert resolve_weights(str(f)) == f
    assert resolve_weights(str(f), sha256=BLOB_SHA.upper()) == f
    with pytest.raises(ModelLoadError, match="does not match sha256"):
        resolve_weights(str(f), sha256="0" * 64)


def test_models_weights_missing_path_names_file(tmp_path):
    with pytest.raises(ModelLoadError, match=r"not found: .*nope\.onnx"):
        resolve_weights(str(tmp_path / "nope.onnx"), what="ONNX model")


def test_models_weights_needs_path_or_url():
    with pytest.raises(ModelLoadError, match="set `path`"):
        resolve_weights(None, None)


def test_models_weights_rejects_non_http_url(cache):
    with pytest.raises(ModelLoadError, match="must be http"):
        resolve_weights(None, "file:///etc/passwd")


def test_models_weights_offline_without_cache(cache, closed_url):
    with pytest.raises(ModelLoadError, match="pass a local `path` instead") as err:
        resolve_weights(None, closed_url, BLOB_SHA, timeout=2)
    assert closed_url in str(err.value)
    assert not any(cache.glob("*")), "no partial file may stay in the cache"


def test_models_weights_cache_hit_needs_no_network(cache, closed_url):
    cache.mkdir(parents=True)
    placed = cache / _cache_name(closed_url, BLOB_SHA)
    placed.write_bytes(BLOB)
    assert resolve_weights(None, closed_url, BLOB_SHA, timeout=2) == placed


def test_models_weights_stale_cache_is_not_trusted(cache, closed_url):
    cache.mkdir(parents=True)
    (cache / _cache_name(closed_url, BLOB_SHA)).write_bytes(b"corrupted")
    with pytest.raises(ModelLoadError, match="cannot download"):
        resolve_weights(None, closed_url, BLOB_SHA, timeout=2)


def test_models_weights_download_then_cache(cache, served):
    base, root = served
    (root / "m.onnx").write_bytes(BLOB)
    got = resolve_weights(None, f"{base}/m.onnx", BLOB_SHA)
    assert got.read_bytes() == BLOB and got.parent == cache
    (root / "m.onnx").unlink()  # a second resolve must not need the server
    assert resolve_weights(None, f"{base}/m.onnx", BLOB_SHA) == got


def test_models_weights_download_sha_mismatch(cache, served):
    base, root = served
    (root / "m.onnx").write_bytes(BLOB)
    with pytest.raises(ModelLoadError, match="expected 0000"):
        resolve_weights(None, f"{base}/m.onnx", "0" * 64)
    assert not any(cache.glob("*"))

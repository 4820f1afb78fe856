"""The detector deployment on real Ray Serve forms batches across concurrent callers
and hands each caller its own result."""

from __future__ import annotations

import asyncio

import pytest
from ray import serve

from deployments.models import build_preprocessor
from tests.support.app import deploy_app
from tests.support.images import photo
from tests.support.paths import SHARED_MODELS

FASTESTDET = SHARED_MODELS / "fastestdet.onnx"
pytestmark = pytest.mark.skipif(
    not FASTESTDET.is_file(), reason=f"{FASTESTDET} absent (../shared/models holds the test weights)"
)

EXPECTED = {"astronaut": "person", "chelsea": "cat", "coffee": "cup"}


@pytest.fixture(scope="module")
def onnx_app(serve_instance):
    return deploy_app(
        serve_instance, "batching", "/batching",
        model="onnx", model_path=str(FASTESTDET), max_batch_size=8, batch_wait_timeout_s=0.05,
    )


async def test_concurrent_requests_share_batches_and_get_their_own_results(onnx_app):
    spec = onnx_app.args.model_spec()
    preprocess = build_preprocessor(spec)
    inputs = {name: preprocess(photo(name)) for name in EXPECTED}
    handle = serve.get_deployment_handle("Detector", app_name=onnx_app.name)
    before = await handle.stats.remote()

    order = [name for _ in range(8) for name in EXPECTED]  # 24 calls, interleaved
    results = await asyncio.gather(*(handle.detect.remote(inputs[name]) for name in order))

    for name, found in zip(order, results):
        top = max(found, key=lambda d: d.score)
        assert top.label == EXPECTED[name], f"{name}: got {top}"
    after = await handle.stats.remote()
    new_batches = {
        size: count - before["batch_sizes"].get(size, 0)
        for size, count in after["batch_sizes"].items()
        if count - before["batch_sizes"].get(size, 0) > 0
    }
    assert after["frames"] - before["frames"] == len(order)
    assert max(new_batches) > 1, f"no batch formed: {new_batches}"
    assert sum(size * n for size, n in new_batches.items()) == len(order)


async def test_sessions_stream_through_the_onnx_detector(onnx_app):
    """Three sessions at once, each with its own photo, each gets boxes drawn."""
    from tests.support.client import StreamClient
    from tests.support.images import green_mask
    from tests.support.waits import wait_for

    clients = [StreamClient(onnx_app.url, photo(name), fps=10) for name in EXPECTED]
    try:
        for c in clients:
            await c.connect()
        for c in clients:
            await c.wait_connected()
            await c.wait_frames(1)
        for c in clients:
            await wait_for(lambda c=c: green_mask(c.latest_image()).sum() > 200, 15,
                           what="boxes drawn on a session's frames")
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_one_bad_frame_fails_alone_not_its_batch(onnx_app):
    """A frame the model cannot take (wrong tensor shape) shares a batch with good
    ones: the good ones still get their detections, the bad one a `FrameFailure`."""
    import numpy as np

    from deployments.models import FrameFailure, ModelInput

    spec = onnx_app.args.model_spec()
    good = build_preprocessor(spec)(photo("astronaut"))
    bad = ModelInput(tensor=np.zeros((3, 7, 7), np.uint8), frame_size=(7, 7))
    handle = serve.get_deployment_handle("Detector", app_name=onnx_app.name)
    before = await handle.stats.remote()
    calls = [good] * 3 + [bad] + [good] * 3
    results = await asyncio.gather(*(handle.detect.remote(item) for item in calls))
    after = await handle.stats.remote()

    assert isinstance(results[3], FrameFailure) and "shape" in results[3].error
    for found in results[:3] + results[4:]:
        assert not isinstance(found, FrameFailure), found
        assert max(found, key=lambda d: d.score).label == "person"
    grew = {s: n - before["batch_sizes"].get(s, 0) for s, n in after["batch_sizes"].items()}
    assert max(s for s, n in grew.items() if n > 0) > 1, f"the bad frame never shared a batch: {grew}"


async def test_the_sessions_threshold_reaches_the_models_filter(onnx_app):
    """A threshold under the model's default 0.25 shows more (weaker) detections; frames
    with different thresholds in one batch each get their own filter."""
    import dataclasses

    spec = onnx_app.args.model_spec()
    item = build_preprocessor(spec)(photo("coffee"))
    handle = serve.get_deployment_handle("Detector", app_name=onnx_app.name)
    thresholds = [None, 0.05, 0.6]
    default, low, high = await asyncio.gather(*(
        handle.detect.remote(dataclasses.replace(item, min_score=t)) for t in thresholds
    ))
    assert all(d.score >= 0.25 for d in default)
    assert any(d.score < 0.25 for d in low), f"nothing under 0.25 at threshold 0.05: {low}"
    assert all(d.score >= 0.05 for d in low) and len(low) > len(default)
    assert all(d.score >= 0.6 for d in high) and len(high) <= len(default)


async def test_a_pack_of_frames_is_one_call_and_each_frame_gets_its_own_answer(onnx_app):
    """The ingress's packed call (`Detector.detect_pack`): the frames of one call join
    the batch queue with frames of other calls; each keeps its own answer, and a frame
    the model cannot take fails alone."""
    import numpy as np

    from deployments.models import FrameFailure, ModelInput

    spec = onnx_app.args.model_spec()
    preprocess = build_preprocessor(spec)
    inputs = {name: preprocess(photo(name)) for name in EXPECTED}
    bad = ModelInput(tensor=np.zeros((3, 7, 7), np.uint8), frame_size=(7, 7))
    handle = serve.get_deployment_handle("Detector", app_name=onnx_app.name)
    before = await handle.stats.remote()

    first = [inputs["astronaut"], bad, inputs["chelsea"]]
    second = [inputs["coffee"], inputs["astronaut"]]
    answers = await asyncio.gather(handle.detect_pack.remote(first), handle.detect_pack.remote(second))
    after = await handle.stats.remote()

    assert [len(a) for a in answers] == [3, 2]
    assert isinstance(answers[0][1], FrameFailure) and "shape" in answers[0][1].error
    for name, found in zip(["astronaut", "chelsea", "coffee", "astronaut"],
                           [answers[0][0], answers[0][2], answers[1][0], answers[1][1]]):
        assert not isinstance(found, FrameFailure), found
        assert max(found, key=lambda d: d.score).label == EXPECTED[name]
    packs = {s: n - before["pack_sizes"].get(s, 0) for s, n in after["pack_sizes"].items()}
    assert packs.get(3) == 1 and packs.get(2) == 1, packs
    grew = {s: n - before["batch_sizes"].get(s, 0) for s, n in after["batch_sizes"].items()}
    assert max(s for s, n in grew.items() if n > 0) > 3, f"the two packs never shared a batch: {grew}"
    assert after["frames"] - before["frames"] == 5

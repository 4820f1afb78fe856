"""The Gradio queue seam (component/gradio_queue.py): the attributes it sets exist on a
fresh Blocks' queue, the slower polling takes, and a queued Gradio event still runs."""

from __future__ import annotations

import gradio as gr
import httpx
import pytest

from component.gradio_queue import IDLE_POLL_S, slow_idle_polling
from tests.support.ports import free_port


def test_gradio_still_polls_with_the_attributes_we_set():
    # What the seam relies on, as Gradio ships it: fails if an upgrade renames them.
    with gr.Blocks() as demo:
        gr.Textbox()
    assert demo._queue.sleep_when_free == 0.001 and demo._queue.progress_update_sleep_when_free == 0.01
    slow_idle_polling(demo)
    assert demo._queue.sleep_when_free == IDLE_POLL_S and demo._queue.progress_update_sleep_when_free == 0.1
    with pytest.raises(ValueError):
        slow_idle_polling(demo, idle_poll_s=0)


def test_a_queued_event_still_runs_with_slower_polling():
    with gr.Blocks() as demo:
        box, out = gr.Textbox(), gr.Textbox()
        box.submit(lambda text: text.upper(), box, out, api_name="shout")
    slow_idle_polling(demo)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        base = f"http://127.0.0.1:{port}/gradio_api/call/shout"
        with httpx.Client(timeout=20, trust_env=False) as http:
            event = http.post(base, json={"data": ["hi"]}).json()["event_id"]
            result = http.get(f"{base}/{event}").text
        assert '"HI"' in result, result
    finally:
        demo.close()

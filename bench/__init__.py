"""Benchmarks: raw model speed (`models_raw`), the load generator (`loop`: the
pre-encoded camera loop each session replays; `clients`: the peers, server and browser
render; `stats`: what a window says; `loadgen`: steps against a target), the served app
and the `gradio_webrtc` reference side by side (`sweep`), and the report.

    python -m bench run            # the full sweep; rewrites BENCHMARKS.md's results
    python -m bench loadgen --url http://127.0.0.1:8000 --sessions 4 [--render browser]
    python -m bench raw            # bench/models_raw.py
    python -m bench report         # tables, plots, BENCHMARKS.md again from results.json
"""

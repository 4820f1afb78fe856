"""Benchmarks: raw model speed (`models_raw`), the load generator (`loadgen`), the
served app and the `gradio_webrtc` reference side by side (`sweep`), and the report.

    python -m bench run            # the full sweep; rewrites BENCHMARKS.md's results
    python -m bench loadgen --url http://127.0.0.1:8000 --sessions 4
    python -m bench raw            # bench/models_raw.py
    python -m bench report         # tables, plots, BENCHMARKS.md again from results.json
"""

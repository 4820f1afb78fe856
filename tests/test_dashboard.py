"""cluster/grafana-rayrtc.json queries only metrics the app exports: checked against
the definitions in deployments/metrics.py, and against what a running app's Ray
metrics endpoint actually serves while a session streams."""

from __future__ import annotations

import ast
import json
import re

import httpx

from tests.support.client import StreamClient
from tests.support.images import photo
from tests.support.paths import ROOT
from tests.support.waits import wait_for

DASHBOARD = ROOT / "cluster" / "grafana-rayrtc.json"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Labels Ray's metrics agent adds to every Serve metric, and Prometheus's own `le`.
RAY_LABELS = {"application", "deployment", "replica", "le"}


def dashboard_exprs() -> list[str]:
    data = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in data["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in data["templating"]["list"] if v["type"] == "query"]
    return exprs


def queried_series() -> set[str]:
    return {name for e in dashboard_exprs() for name in re.findall(r"\bray_rayrtc_\w+", e)}


def defined_metrics() -> dict[str, tuple[str, set[str]]]:
    """name (as exported, `ray_` prefixed) -> (kind, tag keys), from deployments/metrics.py."""
    tree = ast.parse((ROOT / "deployments" / "metrics.py").read_text())
    found = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "metrics"
            and node.func.attr in ("Gauge", "Counter", "Histogram")
        ):
            name = node.args[0].value
            tags = set()
            for kw in node.keywords:
                if kw.arg == "tag_keys":
                    tags = {elt.value for elt in kw.value.elts}
            found["ray_" + name] = (node.func.attr, tags)
    return found


def base_name(series: str, defined: dict) -> str:
    if series in defined:
        return series
    for suffix in HISTOGRAM_SUFFIXES:
        if series.endswith(suffix) and defined.get(series[: -len(suffix)], ("",))[0] == "Histogram":
            return series[: -len(suffix)]
    raise AssertionError(f"the dashboard queries {series}, which deployments/metrics.py does not define")


def test_every_queried_metric_and_label_is_defined():
    defined = defined_metrics()
    assert len(defined) >= 10, defined
    series = queried_series()
    bases = {base_name(s, defined) for s in series}
    # The list: sessions, offers by result, frames in/out/dropped, fn latency,
    # batch size, forward time, errors: all on the dashboard.
    for wanted in ("sessions_active", "offers_total", "frames_in_total", "frames_out_total", "frames_dropped_total",
                   "fn_latency_seconds", "detector_batch_size", "detector_forward_seconds", "detector_errors_total"):
        assert f"ray_rayrtc_{wanted}" in bases, wanted
    known_labels = RAY_LABELS | {t for _, tags in defined.values() for t in tags}
    for expr in dashboard_exprs():
        labels = set(re.findall(r"(\w+)\s*(?:=~|!=|=)\s*\"", expr))
        labels |= {l.strip() for group in re.findall(r"by \(([^)]*)\)", expr) for l in group.split(",")}
        labels |= set(re.findall(r"label_values\(\w+, (\w+)\)", expr))
        assert labels <= known_labels, (expr, labels - known_labels)
    # Each panel reads one data source variable, so it imports into any Grafana.
    data = json.loads(DASHBOARD.read_text())
    assert {p["datasource"]["uid"] for p in data["panels"]} == {"${datasource}"}
    assert len({p["id"] for p in data["panels"]}) == len(data["panels"])


async def test_every_queried_metric_is_served_by_the_running_app(main_app, metrics_url):
    defined = defined_metrics()
    series = queried_series()
    # A counter appears once it has moved: detector errors cannot be caused here for
    # real, so that one is held to its definition above; everything else must show up.
    never_moves_here = {"ray_rayrtc_detector_errors_total"}
    expected = series - never_moves_here
    client = StreamClient(main_app.url, photo("astronaut"), fps=15)
    try:
        await client.connect()
        await client.wait_connected()
        await client.wait_frames(10)
    finally:
        await client.close()  # a session ends: rayrtc_sessions_closed_total moves
    missing: set[str] = set()

    async def exported() -> set[str] | None:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            text = (await http.get(metrics_url)).text
        names = {line.split("{", 1)[0] for line in text.splitlines()
                 if line.startswith("ray_rayrtc_") and f'application="{main_app.name}"' in line}
        missing.clear()
        missing.update(expected - names)
        return names if not missing else None

    try:
        names = await wait_for(exported, 60, interval=0.5, what="the dashboard's series on the metrics endpoint")
    except AssertionError:
        raise AssertionError(f"never exported: {sorted(missing)}") from None
    assert {base_name(s, defined) for s in names if s.startswith("ray_rayrtc_")} <= set(defined)

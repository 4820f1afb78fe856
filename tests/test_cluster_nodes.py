"""Two Ray nodes as on two machines: each in its own network namespace with its own
address (a veth pair the test creates, see tests/support/netns.py), started with plain
`ray start --head` / `ray start --address`. Detector replicas land on the node with the
`detector_node` resource, the ingress on the one with `ingress_node`, and a session
streams through both and comes back annotated.

The scenario runs in a subprocess inside the first namespace
(tests/support/cluster_netns_nodes.py): this test session's driver is already connected to its
own local Ray, and a driver joins one cluster only.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from tests.support.cluster_netns_nodes import ROOT, cluster_pids, stop_cluster

TIMEOUT_S = 240  # typical run here: ~60 s on a loaded 2-core machine


def test_two_nodes_in_two_network_namespaces():
    """Each Ray node on its own address in its own network namespace (a veth pair the
    test creates, nothing else reachable): `ray start --head` in one, `ray start
    --address` in the other, no patching. The ingress runs on node B, the detector on
    node A; a session's media reaches the ingress on B's address and its frames cross
    to A for detection. Both nodes and both namespaces are gone afterwards."""
    from tests.support.netns import NodePair, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    pair = NodePair.create()
    temp_dir = tempfile.mkdtemp(prefix="rrn", dir="/tmp")
    proc = subprocess.Popen(
        [*pair.exec_prefix(0), sys.executable, str(ROOT / "tests" / "support" / "cluster_netns_nodes.py"), temp_dir,
         *pair.addresses, pair.names[1]],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        try:
            out, _ = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
            pytest.fail(f"two-namespace scenario ran past {TIMEOUT_S} s:\n{out[-3000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        pair.delete()
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(name in left for name in pair.names), left
    assert not cluster_pids(temp_dir), "Ray processes left behind"

    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result from the two-namespace scenario:\n{out[-3000:]}"
    result = json.loads(lines[-1][len("RESULT "):])
    assert "error" not in result, f"{result['error']}\n{result.get('trace', '')}\n{out[-3000:]}"
    print("two-namespace cluster:", json.dumps({k: result[k] for k in ("placement", "session", "hops_ms", "timings")}))

    addr_a, addr_b = pair.addresses
    assert result["node_addresses"] == sorted([addr_a, addr_b])
    assert result["placement"]["Ingress"] == [addr_b]
    assert result["placement"]["Detector"] == [addr_a]
    session = result["session"]
    # Media: this client on A, the ingress on B's address, nothing else.
    assert session["answer_candidates"] == [addr_b], session
    assert session["media_pair"] == [addr_a, addr_b], session
    # Frames crossed to A's detector and came back annotated.
    assert session["face_box_drawn"] and session["fps"] >= 4, session
    hops = result["hops_ms"]
    assert hops["from_ingress_node"]["stats"]["p50_ms"] > 0 and hops["from_detector_node"]["stats"]["p50_ms"] > 0

"""Video first on shared cores: the detector lowers its own process's priority (every
thread, those started before included) and bounds inference threads to its CPUs.
(That this keeps video at camera rate under a saturated detector was measured, see
deployments/priority.py; here: that the mechanism is really applied.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deployments.priority import inference_threads

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import os, sys, threading
stop = threading.Event()
early = threading.Thread(target=stop.wait); early.start()   # a thread made before
from deployments.priority import lower_priority
lower_priority(sys.argv[1])
late = threading.Thread(target=stop.wait); late.start()     # and one made after
tids = [int(t) for t in os.listdir("/proc/self/task")]
print(len(tids), min(os.getpriority(os.PRIO_PROCESS, t) for t in tids),
      all(os.sched_getscheduler(t) == os.SCHED_IDLE for t in tids))
stop.set()
"""


@pytest.mark.parametrize("priority,nice,idle", [("low", 10, False), ("idle", 0, True), ("normal", 0, False)])
def test_every_thread_of_the_process_is_lowered(priority, nice, idle):
    out = subprocess.run(
        [sys.executable, "-c", CHILD, priority], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert int(out[0]) >= 3 and int(out[1]) >= nice and (out[2] == "True") == idle, out


def test_inference_threads_stay_within_the_reservation():
    assert [inference_threads(c) for c in (0, 0.5, 1, 1.5, 4)] == [1, 1, 1, 1, 4]


RAY_CHILD = """
import os, sys, threading
stop = threading.Event()
early = threading.Thread(target=stop.wait); early.start()
from deployments.priority import lower_priority, media_priority
media_priority() if sys.argv[1] == "media" else lower_priority(sys.argv[1])
late = threading.Thread(target=stop.wait); late.start()
tids = [int(t) for t in os.listdir("/proc/self/task")]
print(sorted({os.getpriority(os.PRIO_PROCESS, t) for t in tids}))
stop.set()
"""


def _from_ray_niceness(role: str, unprivileged: bool = False) -> list[int]:
    """The nice values of every thread of a process started as Ray starts its workers
    (nice 15, `RAY_worker_niceness`), after `role` set its priority. `unprivileged`:
    without CAP_SYS_NICE (as root, util-linux's setpriv drops it for the child)."""
    drop = ["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice"] if unprivileged and os.geteuid() == 0 else []
    out = subprocess.run(
        [*drop, sys.executable, "-c", RAY_CHILD, role], capture_output=True, text=True, timeout=60, check=True,
        preexec_fn=lambda: os.nice(15), cwd=ROOT,
    ).stdout
    return json.loads(out)


@pytest.mark.skipif(os.geteuid() != 0, reason="lowering niceness needs CAP_SYS_NICE (root here)")
def test_from_rays_worker_niceness_the_media_goes_first():
    """Ray starts workers at nice 15: the ingress claims 0 for every thread, and "low"
    puts the detector at 10, below the media, not level with it."""
    assert _from_ray_niceness("media") == [0]
    assert _from_ray_niceness("low") == [10]


@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None, reason="needs util-linux setpriv as root")
def test_without_the_privilege_low_still_ends_below_the_media():
    """No CAP_SYS_NICE: the ingress keeps Ray's 15 (and says so), "low" goes to 19."""
    assert _from_ray_niceness("media", unprivileged=True) == [15]
    assert _from_ray_niceness("low", unprivileged=True) == [19]

"""Video first on shared cores: the detector lowers its own process's priority (every
thread, those started before included) and bounds inference threads to its CPUs.
(That this keeps video at camera rate under a saturated detector was measured, see
deployments/priority.py; here: that the mechanism is really applied.)"""

from __future__ import annotations

import subprocess
import sys

import pytest

from deployments.priority import inference_threads

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

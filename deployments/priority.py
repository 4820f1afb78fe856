"""Video first when cores are shared: a detector replica's CPU threads and priority.

Ray's `num_cpus` is bookkeeping, not a limit: OpenCV and onnxruntime start a thread per
core they see, and on a node that also runs the ingress, a saturated detector takes
the cores the video needs (video then degrades with the detections). Two remedies,
both applied by the detector replica to its own process:

- inference threads bounded to the CPUs the replica asked Ray for
  (`inference_threads`, applied through `ModelSpec.num_threads`);
- a lower CPU priority (`lower_priority`): "low" is nice 10 (a nice-0 thread, such as
  the ingress's, gets ~9x its share of a contended core; uncontended cores stay fully
  usable), "idle" is SCHED_IDLE (it runs only on otherwise idle CPU and can starve
  under a saturated ingress), "normal" leaves it be.

Measured here (2 cores, another engineer's load around it; an ingress-like loop doing
4 sessions' VP8 decode + H.264 encode at 30 fps next to two all-cores Haar processes):
with the detector at normal priority the loop fell to 26 ticks/s and never caught up;
at "low" and "idle" it held 30/s while the detector still did 82% / 75% of its
normal-priority work. On a node of its own the detector loses nothing: nice only
matters when something else wants the CPU.

Linux applies nice and scheduling policy per thread, so every thread of the process
is changed (threads made later inherit from their creator).
"""

from __future__ import annotations

import logging
import math
import os
from typing import Literal

log = logging.getLogger("ray.serve")

Priority = Literal["normal", "low", "idle"]
LOW_NICE = 10


def inference_threads(num_cpus: float) -> int:
    """Threads for inference within `num_cpus` (Ray's reservation): at least one."""
    return max(1, math.floor(num_cpus))


def lower_priority(priority: Priority) -> int:
    """Lower this process's CPU priority (every thread); returns threads changed."""
    if priority == "normal":
        return 0
    changed = 0
    for name in os.listdir("/proc/self/task"):
        tid = int(name)
        try:
            if priority == "low":
                os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), LOW_NICE))
            else:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        changed += 1
    log.info("detector process priority %s (%d threads)", priority, changed)
    return changed


def current_priority() -> dict:
    """This thread's nice value and scheduling policy, and OpenCV's thread count."""
    import cv2

    policy = os.sched_getscheduler(0)
    return {
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "policy": "idle" if policy == os.SCHED_IDLE else "other" if policy == os.SCHED_OTHER else str(policy),
        "cv2_threads": cv2.getNumThreads(),
    }

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

Ray starts its worker processes at nice 15 (`RAY_worker_niceness`); only its own C++
threads run at 0. So in a replica the event loop, the media threads and aiortc's
decoders all ran at 15, below any ordinary process on the node, and "low" (nice 10)
raised the detector's Python threads no lower than the 15 they had: the video had no
precedence at all (found 2026-11-30 from /proc/<pid>/task/*/stat of live replicas).
Now the ingress, which carries the media, claims nice 0 for its process
(`media_priority`), and "low" puts the detector at nice 10. Both need CAP_SYS_NICE (root,
or an RLIMIT_NICE that allows it) to go below Ray's 15; without it the ingress stays at
15 and "low" goes to 19, the widest gap left.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Literal

log = logging.getLogger("ray.serve")

Priority = Literal["normal", "low", "idle"]
LOW_NICE = 10
# Where "low" goes when this process may not lower its niceness (below Ray's 15).
LOWEST_NICE = 19
# The ingress's media threads: an ordinary process's priority.
MEDIA_NICE = 0


def _threads() -> list[int]:
    return [int(name) for name in os.listdir("/proc/self/task")]


def _renice(tid: int, nice: int, fallback: int | None) -> bool:
    """Set thread `tid` to `nice`; where that needs a privilege this process lacks, to
    `fallback` (None: leave it). Returns whether the thread was changed."""
    try:
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except PermissionError:
        if fallback is None:
            return False
        os.setpriority(os.PRIO_PROCESS, tid, fallback)
    return True


def media_priority() -> int:
    """For the process that carries the media (the ingress replica): every thread at
    nice 0 instead of Ray's worker niceness, where permitted; returns threads changed."""
    changed = 0
    for tid in _threads():
        try:
            changed += _renice(tid, MEDIA_NICE, fallback=None)
        except ProcessLookupError:  # the thread ended meanwhile
            continue
    if changed == 0:
        log.warning("media threads stay at nice %d: lowering it needs CAP_SYS_NICE", os.getpriority(os.PRIO_PROCESS, 0))
    else:
        log.info("media process priority: nice %d (%d threads)", MEDIA_NICE, changed)
    return changed


def inference_threads(num_cpus: float) -> int:
    """Threads for inference within `num_cpus` (Ray's reservation): at least one."""
    return max(1, math.floor(num_cpus))


def lower_priority(priority: Priority) -> int:
    """Lower this process's CPU priority (every thread); returns threads changed."""
    if priority == "normal":
        return 0
    changed = 0
    for tid in _threads():
        try:
            if priority == "low":
                # Nice 10 even from Ray's 15 where permitted, else the lowest priority.
                _renice(tid, LOW_NICE, fallback=LOWEST_NICE)
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

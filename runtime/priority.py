"""Threads that must never take the CPU from the frame loop: the verdict model, the live page's server."""

from __future__ import annotations

import os
import threading


def run_below_the_frame_loop(niceness: int = 19) -> None:
    """Run this thread below the frame loop: on Linux a thread has its own scheduling policy, so the
    model only gets the CPU the loop leaves (llama.cpp with one thread computes on this thread).
    SCHED_IDLE where allowed (the loop's threads always win), else the lowest nice value."""
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        return
    except (AttributeError, OSError):  # not Linux, or not permitted
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, tid, niceness)
    except (AttributeError, OSError):  # not permitted either: run at normal priority
        pass

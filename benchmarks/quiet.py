"""Keeping a benchmark's device and service on their cores on a shared machine.

On this 2-core machine other sessions' test suites and builds run beside a benchmark. Linux
groups each session's processes (autogroups) and shares the CPU between the groups, whatever
their niceness, so another session's suite takes half a core from a benchmark's pinned local
worker and the numbers measure that contest. ``device_priority`` turns autogroups off for the
benchmark (restored after) and raises the benchmark's priority; children inherit it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)
AUTOGROUP = Path("/proc/sys/kernel/sched_autogroup_enabled")


@contextlib.contextmanager
def device_priority(nice: int = -10):
    """Run the body (call it before starting threads or servers: they inherit) at ``nice``,
    with autogroups off so that niceness counts across sessions; both restored after.

    Needs root to raise the priority; without it the benchmark runs as before, with a warning.
    """
    autogroup = AUTOGROUP.read_text().strip() if AUTOGROUP.exists() else None
    old_nice = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        if autogroup == "1":
            AUTOGROUP.write_text("0")
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as exc:
        logger.warning("could not raise the benchmark's priority (%s): other work on this machine may take the "
                       "device's and the service's cores", exc)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, old_nice)
            if autogroup == "1":
                AUTOGROUP.write_text(autogroup)

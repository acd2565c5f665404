"""The bench's processes at the priority the bench was started with (``share_priority``)."""

from __future__ import annotations

import os
from pathlib import Path


def share_priority(pid: int | str = "self") -> bool:
    """Give the session of ``pid`` this process's niceness when it is negative (the bench runs
    at a high priority, ``nice -n -15 python bench/...``); True if it did.

    With Linux's autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``) a nice
    value only ranks a process within its own session: a cluster started in a new session,
    the driver and its load generators each competed as one equal group with every other
    session on the box, whatever their nice. A session's group has a niceness of its own
    (``/proc/<pid>/autogroup``, settable by root): this sets it. Elsewhere a no-op."""
    level = os.nice(0)
    if level >= 0:
        return False
    try:
        Path(f"/proc/{pid}/autogroup").write_text(str(level))
    except OSError:  # no autogroup (kernel or container), not root, or the process is gone
        return False
    return True

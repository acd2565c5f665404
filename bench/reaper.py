"""Clusters a bench starts die with the bench, even when the bench is killed.

The benches start ``shardex up`` in a session of its own (``start_new_session=True``) so that
``os.killpg`` stops the whole cluster in their ``finally`` blocks. A bench killed by SIGKILL (a
test's subprocess timeout, ``timeout -s KILL``, the OOM killer) runs no ``finally``: its clusters
were left running, each holding its ports and a core's worth of polling, and the next runs on
the box measured against them. ``die_with_parent`` (a ``preexec_fn``) asks the kernel
(``prctl(PR_SET_PDEATHSIG, SIGTERM)``) to send SIGTERM to the child when the process that
started it exits, however it exits; ``shardex up`` then stops its children as on Ctrl-C.
Linux only: elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for ``subprocess.Popen``: SIGTERM this child when its parent exits."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))

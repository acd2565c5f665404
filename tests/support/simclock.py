"""For the simulator's tests: whether every node reads the time through ``net.clock``.

Until it does, a cluster run carries real-time readings in its messages (the router's
"seen_s_ago") and its timers fire on real time, so two runs of one seed cannot match byte for
byte; the tests that compare runs skip themselves (``virtual_nodes``) and say which modules
still read the real clock."""

from __future__ import annotations

import inspect

import pytest

import shardex.node.router
import shardex.node.sequenced

REAL_TIME_NODES = [m.__name__ for m in (shardex.node.router, shardex.node.sequenced)
                   if "time.monotonic()" in inspect.getsource(m)]  # fmt: skip

virtual_nodes = pytest.mark.skipif(
    bool(REAL_TIME_NODES), reason=f"{REAL_TIME_NODES} read the real clock"
)

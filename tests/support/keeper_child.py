"""A lease holder with a keeper process, for tests/chaos/test_lease_keeper.py: it takes lease
0 on Redis URL argv[1], then ticks every 10 ms like a leader's loop and prints one JSON line per
change (its pid and its keeper's, whether the keeper renews, whether it may act)."""

from __future__ import annotations

import json
import sys
import time

from shardex.lease import MARGIN, Lease, LeaseLost, connect
from shardex.leasekeeper import KeeperHandle

TTL_MS, RENEW_MS, STALL_S = 400, 75, 0.5


def say(**what: object) -> None:
    print(json.dumps(what), flush=True)


def main(url: str) -> int:
    lease = Lease(connect(url), 0, "holder", "tcp://127.0.0.1:1", TTL_MS, RENEW_MS)
    keeper = KeeperHandle(url, None, lease.name, lease.label, lease.ttl_ms, RENEW_MS, MARGIN,
                          STALL_S)  # fmt: skip
    lease.use_keeper(keeper)
    while not keeper.ready():
        time.sleep(0.01)
    epoch, why = lease.try_acquire(0, 0)
    if not epoch:
        say(error=why)
        return 1
    lease.set_isr(["holder", "other"])  # (the test's "other" may take it over)
    beat = time.monotonic()
    lease.start_renewer(lambda: beat, STALL_S)
    last: tuple[object, ...] = ()
    while True:
        now = time.monotonic()
        resumed = now - beat > STALL_S  # (this loop was stopped: SIGSTOP)
        beat = now
        if resumed:
            say(resumed=True, valid=lease.valid(now))
        try:
            lease.tick(now)
        except LeaseLost:
            say(lost=True)
            return 3
        state = (lease._kept, lease.keeper is not None, lease.valid(now))
        if state != last:
            last = state
            say(pid=lease.keeper.proc.pid if lease.keeper else None, kept=state[0],
                keeper=state[1], valid=state[2])  # fmt: skip
        time.sleep(0.01)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

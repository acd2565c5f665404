"""Per shard, one writer task (``ShardPump.run``): write what is contiguous, then repair the
first gap by asking the shard to re-send it (``OP_EVENTS``: its in-memory ring, else its
journal). A range that is gone is logged as an ALERT and counted, never hidden; a repair
answered late is still used when it arrives."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from shardex.accounts.assets import AssetTable
from shardex.aio import honour_cancel, within
from shardex.clock import REAL, Clock
from shardex.node.bridge.config import BridgeConfig
from shardex.node.bridge.links import ShardState
from shardex.node.bridge.metrics import LAG, LAST, LOST, REPAIRED, Alerts
from shardex.node.bridge.moves import gate
from shardex.node.bridge.redis_writer import RedisWriter
from shardex.node.bridge.replies import (
    denied,
    events_reply_times,
    not_leader,
    parse_events_reply,
)
from shardex.wire.protocol import OP_EVENTS
from shardex.wire.pub import Malformed, check_account_events

log = logging.getLogger("shardex.bridge")

MAX_REPAIR_TIMEOUT = 30.0  # seconds: the longest a repair answer is waited for
MAX_REPAIR_PAUSE = 2.0  # seconds between two repairs of a range that does not move


class ShardPump:
    """Drives one shard's tracker into Redis (the only caller of its writer-side methods).
    Waits are the event loop's (``asyncio``); "now" for the tracker is ``clock``'s."""

    def __init__(
        self,
        cfg: BridgeConfig,
        store: RedisWriter,
        alerts: Alerts,
        assets: AssetTable,
        follow: Callable[[ShardState], Awaitable[None]],
        clock: Clock = REAL,
    ) -> None:
        self.mono = clock.monotonic
        self.cfg = cfg
        self.store = store
        self.alerts = alerts
        self.assets = assets
        self.follow = follow

    async def run(self, st: ShardState) -> None:
        """Forever: wait for news, write every contiguous run, repair the first gap."""
        tr = st.tracker
        wake = st.wake
        while True:
            honour_cancel()  # (a stop a Redis client's wait swallowed)
            if not wake.is_set():
                try:
                    await within(wake.wait(), self.cfg.hole_wait)
                except TimeoutError:
                    pass
            wake.clear()
            if tr.behind_at is not None:
                await self._rewind(st, tr.behind_at)
            while batch := tr.take(self.cfg.batch):
                if st.kind != "balances":  # a pair adopted here waits for its source's events
                    batch = await gate(batch, tr, self.store.shards, self.alerts, st.label,
                                       self.mono)  # fmt: skip
                if not await self.store.write(st, batch):
                    await self.follow(st)  # Redis holds a newer epoch: its leader is elsewhere
                    await asyncio.sleep(0.2)
            gap = tr.gap(self.mono())
            if gap is not None:
                await self._pace(st, gap[0])
                await self.repair(st, *gap)
                wake.set()  # write what it brought, or ask again
            LAG.labels(st.label).set(tr.lag)

    async def _rewind(self, st: ShardState, at: int) -> None:
        """Redis is ahead of the shard: go on from the highest entry of ours at or below it."""
        last = await self.store.until_redis(lambda: self.store.last_written(st, at))
        st.tracker.rewind(last, self.mono())
        LAST.labels(st.label).set(last)

    async def _pace(self, st: ShardState, first: int) -> None:
        """The last repair did not move us (garbage or nothing came back): pause, growing."""
        if first == st.repaired_at:
            await asyncio.sleep(min(MAX_REPAIR_PAUSE, self.cfg.hole_wait * 2 ** min(st.idle, 5)))
            st.idle += 1
        else:
            st.idle = 0
        st.repaired_at = first

    async def repair(self, st: ShardState, first: int, last: int) -> None:
        """Ask the shard for ``first..last`` once; feed what comes back to the tracker."""
        assert st.link is not None
        use = partial(self._use, st, first, last)
        reply = await st.link.request((OP_EVENTS, first, last), timeout=st.repair_timeout, late=use)
        if reply is not None and use(*reply, late=False):
            st.repair_timeout = self.cfg.repair_timeout
            return
        log.warning(
            "%s did not answer a repair request for %d..%d within %.0f s; asking again",
            st.name,
            first,
            last,
            st.repair_timeout,
        )
        st.repair_timeout = min(MAX_REPAIR_TIMEOUT, st.repair_timeout * 2)

    def _use(
        self, st: ShardState, first: int, last: int, error: Any, results: Any, late: bool = True
    ) -> bool:
        """A repair answer (``late``: its request had timed out) → the tracker. True when it
        settled the request (events, or a range that is gone); False to ask again."""
        if denied(error):
            self.alerts.refused(st, "repair", error)
            return not late
        if not_leader(error):
            return False  # asked a standby: the poller follows the leader; ask it again
        check = self._check_accounts if st.kind == "balances" else None
        try:
            evs, gone, seq, bad = parse_events_reply(
                error, results, first, last, self.cfg.markets, check
            )
        except Malformed as exc:
            self.alerts.malformed("reply", 1, f"repair reply of {st.name}: {exc}")
            return False
        if bad:
            self.alerts.malformed("reply", bad, f"{bad} malformed events from {st.name}")
        if gone is not None and denied(gone):
            self.alerts.refused(st, "repair", gone)  # our key, not the shard's journal
            return not late
        if gone is not None:
            if not late:  # decide on a fresh answer only
                self._lost(st, first, last, gone)
            return not late
        assert evs is not None
        if evs:
            REPAIRED.labels(st.label).inc(len(evs))
        # (a late answer's seq is stale); each event's time from the answer's marks
        st.tracker.accept_repair(evs, None if late else seq, events_reply_times(results))
        st.wake.set()
        return True

    def _lost(self, st: ShardState, first: int, last: int, gone: str) -> None:
        """The shard can no longer re-send ``first..last``: count it, ALERT, move on."""
        n = st.tracker.lose(first, last)
        if not n:
            return
        LOST.labels(st.label).inc(n)
        LAST.labels(st.label).set(st.tracker.last)
        self.alerts.alert(
            st.label,
            "lost",
            f"lost{first}",
            "%s events %d..%d cannot be repaired (%s): %d events lost for Redis",
            st.name,
            first,
            last,
            gone,
            n,
        )

    def _check_accounts(self, events: Any) -> tuple[list[tuple], int]:
        return check_account_events(events, self.assets)

"""The leader lease of one replicated shard: the timing and the safety argument. The store
(Redis by default, etcd for an ``etcd://`` URL) is behind ``shardex.coord`` (``coord.base``:
the atomic steps every store provides; ``coord.redisstore`` lists the Redis keys,
``coord.etcd`` the etcd ones). The argument below is written for Redis; for etcd read "the
etcd leader" for "Redis", whose lease expiries only ever move later (keep-alive, leader
change), and whose TTL counts whole seconds (``effective_ttl_ms``).

Why a lease and not just "the process is up": a primary that is paused (SIGSTOP, a long GC, a
VM freeze) and resumes must not act as leader once someone else could have taken over.

Timing (``TTL_MS`` = 800, ``RENEW_MS`` = 150, ``MARGIN`` = 5 %). A failover after a kill -9
costs what is left of the ttl (650–800 ms: the last renew was 0–150 ms before the kill) plus the
standby's reaction (it reads the key's ``PTTL`` and looks again just after it runs out, not on a
fixed period) plus the new leader's start-up and first HELLO to the router. The ttl is the only
part that safety needs; everything else is cut to the bone.

Safety argument (why the old leader has stopped before anyone can take over):

1. The leader reads its monotonic clock at ``t0`` *before* sending the acquire/renew, and from
   then on may act as leader only until ``deadline = t0 + ttl·(1 - margin)`` (its own clock).
2. Redis runs the script at some instant ``tr ≥ t0`` (it cannot run a request before it was
   sent) and sets the key to expire at ``tr + ttl`` on Redis's clock. A slow round trip only
   moves ``tr`` later (more margin); the leader's deadline never depends on when the reply came.
3. So, measured in real time, the leader stops at ``t0 + ttl·(1-m)·(1+ρ)`` where ``ρ`` is how
   much faster real time runs than the leader's monotonic clock over one ttl, and the key can
   disappear no earlier than ``t0 + ttl·(1-ρ')`` (``ρ'`` the same for Redis's clock). The
   leader is always first as long as ``ρ + ρ' < m``: with m = 5 % of 800 ms = 40 ms, clocks
   may disagree in *rate* by 5 % — a free-running crystal is off by ~10⁻⁴, NTP slews at most
   5·10⁻⁴. A standby reads the key only after Redis has expired it, so it takes over at
   ``≥ tr + ttl``, after the old leader's deadline.
4. The leader checks its deadline before every release of replies/events and before taking
   requests, so after its deadline it accepts and publishes nothing (a renew that fails
   because Redis is slow or down leaves the deadline where it was: stalls, never extends).
   Renewals run in a thread of their own (``start_renewer``) so that a busy shard loop does
   not lose the lease; that changes who sends the renew, not how the deadline is computed.
   The same holds for a keeper process (``shardex.leasekeeper``, opt-in): it computes each
   renew's deadline by the same rule and the leader takes the later of its own and the
   keeper's, each one earned by a renew's send time.
   (In the simulator there is no thread: the node's own turn renews, ``tick``; same rule.)
5. Independently of clocks, a deposed leader can never *ack a write* the new leader lacks:
   a write is acked only once every in-sync standby has it (high watermark), the promoted
   standby stops acking the moment it leads, and shrinking the in-sync set is a Lua
   compare-on-the-lease-value that fails once the key is someone else's. The deadline is
   what keeps a paused leader from serving stale *reads* and events after resuming.

What this relies on (README "Failover"): one Redis (not a Sentinel/cluster failover, whose
async replication could hand the key to two holders: a promoted replica that missed the last
renewal expires the key before the leader's deadline, and one that missed an in-sync-set
shrink lets a dropped, lagging standby take over; ``shardex.sim.store`` shows both); clock
*rates* within the margin above; and a Redis host whose wall clock is never stepped forward
(Redis stores expiries as absolute wall-clock times: a forward step expires keys early; run
NTP slewing, e.g. chrony without ``makestep`` after boot). If Redis loses its data (restart
without AOF) the ISR key is gone: any node may then take the lease; the epoch still never goes
backwards because each node's journal keeps the highest epoch it saw and passes it as a floor.

Cost of the short ttl: a leader whose loop or Redis round trips stall for more than
``ttl·(1-m) - renew`` (~610 ms) loses its lease and hands over (a failover, not a fault).
``--lease-ms`` chooses the ttl (``shardex.leasetime``: the renew period follows, and each
lease measures how late its renewals run, which says whether a shorter ttl is safe here).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import Gauge, Histogram

from shardex.clock import REAL, Clock
from shardex.coord.base import Holder, parse_holder
from shardex.coord.connect import check_access, connect, lease_store
from shardex.leasekeeper import KeeperHandle, deadline_after
from shardex.leasetime import DEFAULT_LEASE_MS, LeaseTiming, RenewStats

__all__ = [
    "Connect", "Holder", "Lease", "LeaseLost", "LeaseTiming", "check_access", "connect",
    "parse_holder",
]

LEASE_USER = "lease"  # the Redis ACL user of the lease (``shardex.redisauth``): lease keys only
log = logging.getLogger("shardex.lease")

# Where a lease gets its store's client: ``connect`` (a real Redis, or etcd for an
# ``etcd://`` URL: ``shardex.coord``) unless a caller injects another factory of the same
# shape (the simulator's store: ``shardex.sim.store``).
Connect = Callable[[str, str | None], Any]


TTL_MS = DEFAULT_LEASE_MS  # the expiry (``--lease-ms``): the part of a failover safety needs
RENEW_MS = LeaseTiming.of(TTL_MS).renew_ms  # 150: ~5 renews per ttl, 3 slow or lost survived
MARGIN = 0.05  # the leader stops this fraction of the ttl before Redis can expire the key
# The renewer thread renews only while the shard loop has ticked within this long: a loop busy
# for a while (a gap-repair replay from the journal) keeps its lease; a wedged one loses it.
LOOP_STALL_S = 3.0


# How late the leader's renewals run (the renewer thread's wake-up lateness: GIL holds,
# scheduling, GC pauses of its process) and the longest gap between successful ones: what says
# whether a shorter ``--lease-ms`` is safe on this box (docs/failover.md).
RENEW_LATENESS = Histogram(
    "shardex_lease_renew_lateness_seconds", "Lease renew sent minus when it was due",
    ["lease"], buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
)  # fmt: skip
RENEW_GAP_MAX = Gauge("shardex_lease_renew_gap_max_seconds",
                      "Longest gap between successful lease renews (sends)", ["lease"])


class LeaseLost(Exception):
    """Redis says someone else holds (or nobody holds) the lease we thought was ours."""


class Lease:
    """One node's view of shard ``shard``'s lease: acquire, renew, record the in-sync set.

    ``deadline`` is the monotonic time until which this node may act as leader (0: never),
    on ``clock`` (the node's: ``net.clock``; ``REAL`` in a process). ``thread``: renew from a
    thread of its own (``start_renewer``, a process); False: the node's turn renews
    (``tick``), so a simulated run has no thread and no real time in it.
    """

    def __init__(
        self,
        client: Any,
        shard: int,
        node: str,
        endpoint: str,
        ttl_ms: int = TTL_MS,
        renew_ms: int = RENEW_MS,
        margin: float = MARGIN,
        name: str | None = None,
        clock: Clock = REAL,
        thread: bool = True,
    ) -> None:
        """``name``: the lease's key suffix and what logs call it: the engine shard's index
        by default (``shardex:lease:I``, as before), ``accounts-J`` for account shard J."""
        if "|" in node or "," in node or "|" in endpoint:
            raise ValueError("node ids and endpoints may not contain '|' or ','")
        if not 0 < renew_ms * 3 <= ttl_ms:
            raise ValueError("renew at least three times per ttl")
        self.r = client  # the store's client (Redis, its simulated twin, or ``EtcdClient``)
        self.clock = clock
        self.thread = thread
        self.shard = shard
        self.name = name or str(shard)
        self.label = f"shard {shard}" if name is None else self.name
        self.node = node
        self.endpoint = endpoint
        self.renew_s = renew_ms / 1000
        self.margin = margin
        self.store = lease_store(client, self.name)
        self.keys = getattr(self.store, "keys", ())  # (Redis: the lease's keys)
        self.ttl_ms = self.store.effective_ttl_ms(ttl_ms)
        self.epoch = 0
        # what we present to the store as holder (its fencing token; None: not holding)
        self.value: Any = None
        self.deadline = 0.0
        self.last_renew = 0.0
        self.lost: LeaseLost | None = None  # set by the renewer thread, raised by ``check``
        self.stats = RenewStats()  # how late the renewals ran (``renew``'s ``planned``)
        self._stop_renewer: threading.Event | None = None
        # what the renewer thread asks for the loop's last tick (``start_renewer``): rebound
        # when the leader's loop takes over from the promotion that started the thread
        self._beat: Callable[[], float] = self.clock.monotonic
        self._first = False  # the next renew is the first since an acquire (logged)
        # a keeper process that renews instead of the thread (``use_keeper``,
        # ``shardex.leasekeeper``); ``_kept``: it renews the current token
        self.keeper: KeeperHandle | None = None
        self._kept = False
        self._keeper_looked = 0.0

    def use_keeper(self, keeper: KeeperHandle) -> None:
        """Renew through ``keeper`` (a process: no GIL shared with the loop) once it is
        connected; until then, and if it dies, the renewer thread renews (``start_renewer``)."""
        self.keeper = keeper

    # -- reading -------------------------------------------------------------------------------

    def holder(self) -> Holder | None:
        return self.store.holder()

    def holder_ttl(self) -> tuple[Holder | None, int]:
        """The holder and the milliseconds left before the store expires its lease (one round
        trip in Redis; -1/-2 when there is no ttl/no key). A standby uses it to look again
        just after the lease can have expired instead of on a fixed period (failover time)."""
        return self.store.holder_ttl()

    def isr(self) -> list[str]:
        return self.store.isr()

    def starts(self) -> dict[int, int]:
        return self.store.starts()

    # -- leading -------------------------------------------------------------------------------

    def try_acquire(self, floor: int, start_seq: int) -> tuple[int, str]:
        """Take the lease if it is free and we may (in the in-sync set, or no set recorded).

        Returns (epoch, "ok") with a new epoch > ``floor``, or (0, why not)."""
        t0 = self.clock.monotonic()
        epoch, why, token = self.store.acquire(self.node, self.endpoint, self.ttl_ms, floor,
                                               start_seq)  # fmt: skip
        if epoch:
            self.epoch = epoch
            self.value = token
            self._first = True
            self._granted(t0)
        return epoch, why

    def _granted(self, t0: float) -> None:
        self.deadline = deadline_after(t0, self.ttl_ms, self.margin)
        self.last_renew = t0
        if self.stats.last_ok is None:
            self.stats.granted(t0)

    def valid(self, now: float | None = None) -> bool:
        """Whether we may still act as leader (monotonic clock, local deadline)."""
        t = self.clock.monotonic() if now is None else now
        if self._kept and self.keeper is not None:  # (the keeper's deadline, if later)
            self.deadline = max(self.deadline, self.keeper.valid_until())
        return self.value is not None and t < self.deadline

    def due(self, now: float) -> bool:
        return self.value is not None and now - self.last_renew >= self.renew_s

    def renew(self, planned: float | None = None) -> bool:
        """Compare-and-refresh. True: renewed; False: Redis could not be asked (the deadline
        stays where it was). Raises LeaseLost when Redis says the lease is not ours.
        ``planned``: when this renew was due (its lateness goes into ``stats``)."""
        if self.value is None:
            raise LeaseLost("no lease held")
        t0 = self.clock.monotonic()
        self.last_renew = t0
        try:
            ok = self.store.renew(self.value, self.ttl_ms)
        except Exception:  # redis down or slow: keep the old deadline, try again next time
            ok = None
        if planned is not None:
            self._account(planned, t0, ok is not False)
        if ok is None:
            return False
        if not ok:
            self.value = None
            self.deadline = 0.0
            raise LeaseLost(f"lease of {self.label} epoch {self.epoch} is no longer ours")
        self._granted(t0)
        return True

    def _account(self, planned: float, sent: float, ok: bool) -> None:
        """Record one renew's lateness and, once it succeeded, the gap it closed."""
        gap = self.stats.renewed(planned, sent, self.clock.monotonic(), ok)
        RENEW_LATENESS.labels(self.name).observe(max(0.0, sent - planned))
        if self._first:  # (a new leader's first renew: late when the promotion starved it)
            self._first = False
            late_ms = max(0.0, sent - planned) * 1000
            log.info("lease %s epoch %d: first renew after taking it %.1f ms late",
                     self.label, self.epoch, late_ms)  # fmt: skip
        if gap is not None and gap >= self.stats.max_gap:
            RENEW_GAP_MAX.labels(self.name).set(gap)

    # -- the renewer thread (the leader) -------------------------------------------------------

    def start_renewer(self, loop_beat: Callable[[], float], stall_s: float = LOOP_STALL_S) -> None:
        """Renew from a thread of its own every ``renew`` period, so that a busy shard loop
        (a long gap-repair read, a slow Redis round trip) neither loses the lease nor waits
        for Redis. ``loop_beat()`` is the monotonic time the loop last ticked: past
        ``stall_s`` without one the thread stops renewing, so a wedged leader still hands
        over. The safety argument is unchanged (the deadline is computed the same way and the
        loop checks it before every release); Redis saying the lease is someone else's is
        kept in ``lost`` and raised in the loop by ``check``.

        A promoted standby starts it the moment it takes the lease (``loop_beat``: the take,
        so a promotion wedged for ``stall_s`` still hands over), before its promotion work
        (journal, sockets, HELLO), which once delayed a new leader's first renew by 0.5–1.4 s;
        the leader's loop then calls this again with its own beat, which only rebinds it
        (one thread per lease, its cadence unbroken)."""
        self._beat = loop_beat
        if self._kept:
            return  # (its keeper process renews: the loop's ticks reach it through ``tick``)
        if self._stop_renewer is not None and not self._stop_renewer.is_set():
            return  # (already renewing since the take: the loop's beat from now on)
        if self._hand_to_keeper():
            return  # (a connected keeper takes it at once: a thread's wake-up, late in a
            # busy promotion, would set the keeper's first renew)
        stop = self._stop_renewer = threading.Event()
        mono = self.clock.monotonic

        def run() -> None:
            stalled = False
            planned = self.last_renew + self.renew_s
            while not stop.wait(max(0.0, planned - mono())):
                if self.value is None or self._hand_to_keeper():
                    break
                if mono() - self._beat() > stall_s:
                    if not stalled:
                        log.error("ALERT %s: the loop has not ticked for %.1f s: no "
                                  "more lease renewals (a standby takes over)", self.label,
                                  stall_s)  # fmt: skip
                    stalled = True
                    self.last_renew = mono()  # (look again a period later)
                    planned = self.last_renew + self.renew_s
                    continue
                stalled = False
                try:
                    self.renew(planned)
                except LeaseLost as exc:
                    self.lost = exc
                    log.warning("lease %s renewals: %s", self.label, self.stats.summary())
                    break
                planned = self.last_renew + self.renew_s
            stop.set()  # (ended: a later ``start_renewer`` starts a thread again)

        threading.Thread(target=run, name=f"lease-{self.name}", daemon=True).start()

    def _hand_to_keeper(self) -> bool:
        """The renewer thread's hand-off: True once the keeper process renews the current
        token (the thread then ends); False with no keeper or one not yet connected."""
        if self.keeper is None or self.value is None or not self.keeper.ready():
            return False
        self._kept = self.keeper.take(self.value, self.last_renew, self._beat(), self.epoch)
        if self._kept:
            log.info("lease %s: renewed by its keeper process (pid %d) from now on",
                     self.label, self.keeper.proc.pid)  # fmt: skip
        return self._kept

    def _watch_keeper(self, now: float) -> None:
        """With a keeper renewing: pass it the loop's heartbeat, raise what it learned, and
        once a renew period, see that it lives (a dead one: the thread renews again)."""
        keeper = self.keeper
        if keeper is None or not self._kept:
            return
        keeper.beat(now)
        if keeper.lost():
            self.value, self.deadline, self._kept = None, 0.0, False
            self.lost = LeaseLost(f"lease of {self.label} epoch {self.epoch} is no longer ours")
        elif now - self._keeper_looked >= self.renew_s:
            self._keeper_looked = now
            if not keeper.alive():
                log.error("ALERT lease %s: its keeper process died (exit %s): renewing from "
                          "the leader's thread again", self.label,
                          keeper.proc.returncode)  # fmt: skip
                self.valid(now)  # (keep the keeper's last deadline)
                self.keeper, self._kept = None, False
                self.start_renewer(self._beat)

    def check(self) -> None:
        """Raise what the renewer thread (or keeper) learned: Redis says the lease is not
        ours."""
        if self.lost is not None:
            raise self.lost

    def tick(self, now: float) -> None:
        """The loop's part of renewing, every turn: with a renewer thread, raise what it
        learned (``check``); without one (``thread=False``: the simulator), renew here when a
        period has passed (raises LeaseLost when Redis says the lease is not ours). The
        deadline is computed the same way either way (``renew``)."""
        if self.thread:
            self._watch_keeper(now)
            self.check()
        elif self.due(now):
            self.renew(self.last_renew + self.renew_s)

    def set_isr(self, members: list[str]) -> bool:
        """Record the in-sync set (only while holding the lease). False if Redis could not be
        asked; raises LeaseLost when the lease is not ours."""
        if self.value is None:
            raise LeaseLost("no lease held")
        try:
            ok = self.store.set_isr(self.value, members)
        except Exception:
            return False
        if not ok:
            self.value = None
            self.deadline = 0.0
            raise LeaseLost(f"lease of {self.label} epoch {self.epoch} is no longer ours")
        return True

    def release(self) -> None:
        """Give the lease up now (clean shutdown: the standby need not wait for the expiry)."""
        if self._stop_renewer is not None:
            self._stop_renewer.set()
        if self.keeper is not None and self._kept:
            self.keeper.stop()  # (its renews of a released token would fail anyway)
            self._kept = False
        if self.value is None:
            return
        if self.stats.renews:
            log.info("lease %s renewals: %s", self.label, self.stats.summary())
        value, self.value, self.deadline = self.value, None, 0.0
        try:
            self.store.release(value)
        except Exception:
            pass

"""Shedding by time spent queued (CoDel-style), without sockets or a clock of its own.

A cap on how many requests may wait (the router's ``max_inflight``) bounds a queue's length,
not its wait: 1000 requests in front of a shard that serves 1000 a second is a second of
queue, and every order admitted behind them is late. What a trader needs bounded is the wait,
so the router sheds by it: per shard, ``Codel`` is told at every admission how long the
request would wait there (``delay``: the shard's queue over its measured service rate,
``ServiceRate``) and answers whether to refuse it with ``overloaded`` instead.

The rule is CoDel's, in the form RPC servers use (folly's ``Codel``): a queue is *overloaded*
when, over a whole ``interval``, the wait never dropped below ``target`` (a standing queue,
not a burst that drains by itself). While overloaded, a request that would wait longer than
``limit`` is refused; a burst that stays under ``target`` at some point of an interval is never
shed, and a request is never refused while its queue is empty. ``delay`` is measured by its
caller with its own clock; this module only compares numbers, so tests drive it with a fake
clock (plain floats) and the simulator with its virtual one.
"""

from __future__ import annotations

import math

TARGET_S = 0.005  # CoDel's target: a wait that, held for a whole interval, is a standing queue
INTERVAL_S = 0.100  # CoDel's interval: how long the wait must stay above target
LIMIT_S = 0.020  # while overloaded, refuse a request that would wait longer than this


class Codel:
    """One queue's controller: ``observe(delay, now)`` per arriving request → shed it?

    ``delay`` is the wait a request arriving at ``now`` is about to have in the queue (0
    for an empty one), however its caller estimates it. ``limit <= 0`` turns shedding off
    (``observe`` always says admit, the state is still kept for reports)."""

    __slots__ = ("target", "interval", "limit", "overloaded", "shed", "_min", "_until")

    def __init__(
        self, target: float = TARGET_S, interval: float = INTERVAL_S, limit: float = LIMIT_S
    ) -> None:
        if target < 0 or interval <= 0:
            raise ValueError("Codel: target >= 0 and interval > 0")
        self.target = target
        self.interval = interval
        self.limit = limit
        self.overloaded = False  # the last whole interval held a standing queue
        self.shed = 0  # requests refused on its word (counted by the caller, who may not)
        self._min = 0.0  # the smallest delay seen in the current interval
        self._until = -math.inf  # when the current interval ends

    def observe(self, delay: float, now: float) -> bool:
        """True: refuse this request (``overloaded``); False: admit it."""
        if now >= self._until:
            # the interval that ended decides the next one; one without any request (the
            # queue went quiet for longer than an interval) is no standing queue
            quiet = now >= self._until + self.interval
            self.overloaded = not quiet and self._min > self.target
            self._min = delay
            self._until = now + self.interval
        elif delay < self._min:
            self._min = delay
        return self.overloaded and delay > self.limit > 0


QUEUE_CAP_S = 0.050  # the in-flight cap per shard: what it serves in this time at its rate


def rate_cap(rate: float, queue_s: float, floor: int, ceiling: int) -> int:
    """The most requests a shard served at ``rate`` per second may hold unanswered, so that one
    admitted behind them waits about ``queue_s``: ``rate × queue_s``, at least ``floor`` (a
    slow or descheduled shard still takes a client's pipelined requests), at most ``ceiling``
    (the count cap). ``ceiling`` until a rate is measured, or with ``queue_s`` 0 (off).

    Unlike ``Codel`` it needs no standing queue: it is a count cap whose count follows the
    shard's speed, always on (like ``Codel``, the router spares a client with nothing in
    flight), so a queue in front of a shard holds ~``queue_s`` of work (at 8,000 requests/s,
    400 instead of the count cap's 1,000: 50 ms instead of 125; at 4,000/s the floor of 250,
    62 ms instead of 250)."""
    if rate <= 0 or queue_s <= 0:
        return ceiling
    return min(ceiling, max(floor, int(rate * queue_s)))


class ServiceRate:
    """How fast a queue is served while it holds work: requests answered over the time it was
    busy, re-measured after every ``window`` seconds of busy time (an average with the previous
    estimate). ``wait(queued)`` is then what a request arriving behind ``queued`` others will
    wait (Little's law), bursts included: the time the queue's oldest request has waited says
    nothing of a thousand requests admitted in the same instant behind it.

    Idle time is never counted: ``started`` (a request found the queue empty) starts a busy
    period, ``answered`` says whether the queue still holds work after its answers."""

    __slots__ = ("window", "rate", "_n", "_t", "_last", "_busy")

    def __init__(self, window: float = INTERVAL_S) -> None:
        self.window = window
        self.rate = 0.0  # requests per second while busy (0: not measured yet)
        self._n = 0
        self._t = 0.0
        self._last = 0.0
        self._busy = False

    def started(self, now: float) -> None:
        """A request entered the queue while it was empty: busy from ``now``."""
        self._busy = True
        self._last = now

    def answered(self, n: int, now: float, busy: bool) -> None:
        """``n`` requests were answered at ``now``; ``busy``: the queue still holds some."""
        if self._busy:
            self._n += n
            self._t += max(0.0, now - self._last)
            if self._t >= self.window and self._n:
                fresh = self._n / self._t
                self.rate = fresh if not self.rate else (self.rate + fresh) / 2
                self._n, self._t = 0, 0.0
        self._last = now
        self._busy = busy

    def wait(self, queued: int) -> float:
        """Seconds a request joining ``queued`` others waits at the measured rate; 0 until a
        rate is measured (nothing is shed on a guess)."""
        return queued / self.rate if self.rate else 0.0

"""Shedding by time spent queued (CoDel-style), without sockets or a clock of its own.

A cap on how many requests may wait (the router's ``max_inflight``) bounds a queue's length,
not its wait: 1000 requests in front of a shard that serves 1000 a second is a second of
queue, and every order admitted behind them is late. What a trader needs bounded is the wait,
so the router sheds by it: per shard, ``Codel`` is told at every admission how long the
shard's queue has been holding its oldest request (``delay``) and answers whether to refuse
this one with ``overloaded`` instead.

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

    ``delay`` is how long the queue's oldest request has waited at ``now`` (0 for an empty
    queue): the wait an arriving request is about to join. ``limit <= 0`` turns shedding off
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
        self.shed = 0  # requests this controller refused
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
        if self.overloaded and delay > self.limit > 0:
            self.shed += 1
            return True
        return False

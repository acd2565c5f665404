"""The router's engine shard slots follow the placement map's shard count (``Router``'s state,
no I/O): ``shardex reshard --shards N`` on a running cluster starts or stops engine shard
processes, and the routers take the new count from the newest map a shard's HELLO carries
instead of being restarted.

``resize(router, n)``
    Slots ``0..n-1``: growing appends empty slots (no route until the new shard's HELLO
    registers it, like a slot at start); shrinking drops slots ``n..`` with their registration,
    and requests still in flight to them are forgotten (the shards were emptied by the moves
    before they stopped: nothing should be in flight, and what is will never be answered).
    Only without the account tier, whose slots follow the engine shards' (and whose forward
    chains are per engine shard): with it the count is fixed, as before.

Why from the map and not from the HELLO's ``shards``: a shard started before the change keeps
saying the count it was started with; the map's version orders the changes, so a late HELLO of
a stopped shard (an older map) never brings its slot back.
"""

from __future__ import annotations

from typing import Any

from shardex.metrics import LATENCY_BUCKETS, Hist
from shardex.node.sojourn import Codel, ServiceRate

# per-slot lists of the router, with the value a new slot starts with
_ZEROS = ("forwarded", "shard_inflight", "shard_bytes", "skipped", "batch_bytes")
_PER_SLOT_DICTS = ("topology", "last_seen", "epochs", "recovering", "fenced")


def resizable(router: Any) -> bool:
    """Whether ``router``'s engine slots may change (no account tier)."""
    return not router.accounts


def resize(router: Any, n: int) -> None:
    """Give ``router`` engine slots ``0..n-1`` (see the module docstring)."""
    old = router.shards
    if n == old or not resizable(router):
        return
    if n > old:
        _grow(router, old, n)
    else:
        _shrink(router, n)
    router.shards = router.slots = n
    router._route.clear()


def _grow(r: Any, old: int, n: int) -> None:
    ids = [f"shard-{i}".encode() for i in range(old, n)]
    r.identities += ids
    if r.registry is None:  # insecure: a slot's route is the name its shard connects with
        r.route_ids += ids
        r.shard_of.update((ident, old + k) for k, ident in enumerate(ids))
    else:  # secure: learned from the shard's signed HELLO
        r.route_ids += [None] * len(ids)
    cfg, more = r.cfg, n - old
    for name in _ZEROS:
        getattr(r, name).extend([0] * more)
    r.served.extend([0.0] * more)
    r.codel.extend(Codel(cfg.shed_target, cfg.shed_interval, cfg.shed_limit)
                   for _ in range(more))  # fmt: skip
    r.rates.extend(ServiceRate(cfg.shed_interval) for _ in range(more))
    r.caps.extend([cfg.max_inflight] * more)  # (no rate measured yet: the count cap)
    r.ack_time.extend(Hist(LATENCY_BUCKETS) for _ in range(more))
    r.batches.extend([] for _ in range(more))


def _shrink(r: Any, n: int) -> None:
    for key, entry in [(k, e) for k, e in r.inflight.items() if e[0] >= n]:
        r._forget(key, entry)
    for name in (*_ZEROS, "served", "codel", "rates", "caps", "ack_time", "batches",
                 "identities", "route_ids"):  # fmt: skip
        del getattr(r, name)[n:]
    for name in _PER_SLOT_DICTS:
        d = getattr(r, name)
        for slot in [s for s in d if s >= n]:
            del d[slot]
    r.shard_of = {ident: i for ident, i in r.shard_of.items() if i < n}
    r.ready = [i for i in r.ready if i < n]
    r.stale_epochs = {(i, e) for i, e in r.stale_epochs if i < n}

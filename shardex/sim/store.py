"""A simulated lease/stream store: Redis as the simulator sees it, with its failover.

What the cluster asks of Redis is small: the lease's Lua scripts and ``PTTL`` (``shardex.lease``)
and the bridge's ``WRITE_SCRIPT`` with ``XRANGE``/``XREVRANGE`` (``node.bridge.redis_writer``).
``SimStore`` serves exactly those through ``fakeredis`` (with Lua: ``fakeredis[lua]``, lupa's Lua
5.1 as in Redis) — the SAME scripts, through the same redis-py client classes
(``fakeredis.FakeRedis`` is a ``redis.Redis``, ``FakeAsyncRedis`` a ``redis.asyncio.Redis``), so
the lease and the bridge run their production code against it, one in-memory server shared by
the sync lease clients and the async bridge client.

Three things the real store does that the simulator needs, added here:

* **Time is the simulation's.** fakeredis stamps each command with ``time.time()`` and computes
  ``PX``/``PEXPIRE`` expiries and ``PTTL`` from it (``Database.time``, set per command; there is
  no documented hook). ``ClockedServer`` makes every database read ``clock.time()`` instead, so
  an 800 ms lease expires after 800 ms of *virtual* time (Redis keeps expiries as absolute
  wall-clock times, and so does this: a skewed ``clock`` moves them as a stepped wall clock
  would).
* **Redis's Lua libraries.** fakeredis has no ``cmsgpack``; the bridge's script unpacks its
  batch with ``cmsgpack.unpack``: provided here from ``msgpack``, as strict as Redis 7.0's
  (it refuses msgpack's *bin* type). (Also: fakeredis hands a
  ``redis.pcall`` error to the script as a Python object, not a Lua string; the script's
  ``string.find(r.err, ...)`` needs a string, so ``redis.pcall`` is wrapped to give one.)
* **Replication and its failover.** Redis replicates asynchronously: a replica is the
  primary as of some moment in the past. ``SimStore`` keeps that image (``sync``: the replica
  catches up, copying only the keys written since, a stream by its entry list; ``turn``: it does
  so after a seeded lag) and ``failover`` promotes it: every write since its last sync is gone,
  as after a Sentinel or cluster failover. The clients stay
  connected (as a Sentinel-aware client reconnects to the new primary) and see the older data;
  the script cache is empty (the new primary never ran ``SCRIPT LOAD``: ``NOSCRIPT``, which both
  redis-py's ``Script`` and the bridge re-load from). ``down``/``up``: an outage (every call
  raises ``ConnectionError``; nothing is lost).

Why this matters: the lease's safety argument (``shardex.lease``) assumes ONE Redis. A failover
that loses the leader's last renewal lets the key expire before the leader's own deadline (two
nodes act as leader at once), and one that loses an in-sync-set shrink lets the dropped, lagging
standby take the lease (acked writes lost). The tests (tests/unit/test_sim_store.py) show both;
the simulator can therefore explore what a store failover does to the cluster.
"""

from __future__ import annotations

import copy
import heapq
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import fakeredis
import msgpack
import redis
from fakeredis._core._database import Database, Item
from fakeredis.model import XStream

from shardex.clock import REAL, Clock

# ``redis.pcall`` as Redis has it: an error reply's ``err`` is a Lua string (see the docstring)
_PCALL_ERR_AS_STRING = """
local pcall_ = redis.pcall
redis.pcall = function(...)
  local r = pcall_(...)
  if type(r) == 'table' and r.err ~= nil and type(r.err) ~= 'string' then
    r.err = tostring(r.err)
  end
  return r
end
"""

# ``cmsgpack.unpack`` from a Python (ok, value) function: a failure is a Lua error, as Redis's
_RAISING = """
function(py)
  return function(blob)
    local ok, v = py(blob)
    if not ok then error(v, 0) end
    return v
  end
end
"""

LAG_S = (0.0, 0.05)  # a replica is this far behind its primary (seeded uniform draw per sync)


class ClockedDatabase(Database):  # type: ignore[misc]
    """A fakeredis database whose "now" is ``clock.time()`` (expiries, ``PTTL``): fakeredis
    assigns ``time`` before every command, which is ignored here. It also keeps the keys
    written since the replica last caught up (``dirty``): every write of fakeredis's commands
    goes through ``notify_watch`` (a modified key), ``schedule_expiry`` (a new expiry) or
    ``__setitem__``/``__delitem__``."""

    def __init__(self, lock: Any, clock: Clock) -> None:
        self._clock = clock
        self.dirty: set[bytes] = set()
        super().__init__(lock)

    @property  # type: ignore[override]
    def time(self) -> float:
        return self._clock.time()

    @time.setter
    def time(self, value: float) -> None:  # (fakeredis's own stamp: ignored)
        pass

    def notify_watch(self, key: bytes) -> None:
        self.dirty.add(key)
        super().notify_watch(key)

    def schedule_expiry(self, key: bytes, expireat: float | None) -> None:
        self.dirty.add(key)
        super().schedule_expiry(key, expireat)

    def __setitem__(self, key: bytes, value: Any) -> None:
        self.dirty.add(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: bytes) -> None:
        self.dirty.add(key)
        super().__delitem__(key)

    def swap(self, other: Database) -> None:
        self.dirty.update(self._dict, other._dict)
        super().swap(other)


class ClockedServer(fakeredis.FakeServer):
    """A fakeredis server on ``clock``, with Redis's ``cmsgpack`` in its Lua."""

    def __init__(self, clock: Clock = REAL) -> None:
        super().__init__()
        self.clock = clock
        self.dbs = defaultdict(lambda: ClockedDatabase(self.lock, clock))
        self._lua_libraries()

    def _lua_libraries(self) -> None:
        """Create the server's Lua runtime (fakeredis does it at the first script) and add
        what Redis's has and the cluster's scripts use."""
        fakeredis.FakeRedis(server=self).eval("return 1", 0)
        lua = self._lua_runtime  # type: ignore[attr-defined]

        def unpack(blob: bytes) -> tuple[bool, Any]:
            try:
                obj = _as_redis_cmsgpack(msgpack.unpackb(
                    blob, raw=False, unicode_errors="surrogateescape", strict_map_key=False))
            except ValueError:
                return False, b"Bad data format in input."
            return True, lua.table_from([obj], recursive=True)[1]

        lua.globals().cmsgpack = lua.table_from({b"unpack": lua.eval(_RAISING)(unpack)})
        self._lua_expected_globals.add(b"cmsgpack")  # type: ignore[attr-defined]
        lua.execute(_PCALL_ERR_AS_STRING)


def _as_redis_cmsgpack(obj: Any) -> Any:
    """``obj`` as Redis's ``cmsgpack.unpack`` gives it to a script: strings as bytes; the
    msgpack *bin* type, which Redis's (7.0) cannot read, refused as Redis refuses it."""
    if isinstance(obj, str):
        return obj.encode("utf-8", "surrogateescape")
    if isinstance(obj, bytes):
        raise ValueError("Bad data format in input.")
    if isinstance(obj, (list, tuple)):
        return [_as_redis_cmsgpack(v) for v in obj]
    if isinstance(obj, dict):
        return {_as_redis_cmsgpack(k): _as_redis_cmsgpack(v) for k, v in obj.items()}
    return obj


@dataclass(frozen=True)
class _StreamImage:
    """A stream as the replica holds it: its entries' ids and fields (shared with the
    primary's: fakeredis never changes an entry once added), counters and expiry. Copying
    the id list and the entry map is C-speed; the stream is rebuilt only at a failover.
    (Consumer groups are not kept: the cluster uses none.)"""

    ids: list[Any]
    values: dict[Any, list[bytes]]
    entries_added: int
    last_id: Any
    max_deleted_id: Any
    expireat: float | None

    @classmethod
    def of(cls, item: Item) -> _StreamImage:
        v = item.value
        return cls(list(v._ids), dict(v._values_dict), v._entries_added, v._last_id,
                   v._max_deleted_id, item.expireat)  # fmt: skip

    def restore(self) -> Item:
        stream = XStream()
        for key in self.ids:
            stream.add(self.values[key], key)
        stream._entries_added = self.entries_added
        stream._last_id = self.last_id
        stream._max_deleted_id = self.max_deleted_id
        item = Item(stream)
        item.expireat = self.expireat
        return item


def _snapshot(item: Item) -> Any:
    """What the replica keeps of a key: a stream's image, any other value deep-copied."""
    return _StreamImage.of(item) if isinstance(item.value, XStream) else copy.deepcopy(item)


def _restore(image: Any) -> Item:
    return image.restore() if isinstance(image, _StreamImage) else copy.deepcopy(image)


class CuttableRedis(fakeredis.FakeRedis):
    """A sync client that one node's partition from the store can cut: while ``cut``, every
    command and pipeline raises ``redis.ConnectionError`` as an unreachable Redis does (the
    others' clients go on)."""

    cut = False

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if self.cut:
            raise redis.exceptions.ConnectionError("cut off from the store")
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        def gated(raise_on_error: bool = True) -> Any:
            if self.cut:
                pipe.reset()
                raise redis.exceptions.ConnectionError("cut off from the store")
            return execute(raise_on_error)

        pipe.execute = gated  # type: ignore[method-assign]
        return pipe


class SimStore:
    """One simulated Redis: a primary the clients talk to, and its asynchronous replica.

    ``clock``: the store's time (expiries, replication lag); ``seed``: the replication lags'
    draws; ``lag``: (min, max) seconds a replica trails its primary, None: it catches up only
    on ``sync`` (a test chooses the moment exactly)."""

    def __init__(self, clock: Clock = REAL, seed: int = 0,
                 lag: tuple[float, float] | None = LAG_S) -> None:  # fmt: skip
        self.clock = clock
        self.rng = random.Random(seed)
        self.lag = lag
        self.server = ClockedServer(clock)
        # the replica's copy of each database, key by key (``_snapshot``), as of ``synced_at``
        self.replica: dict[int, dict[bytes, Any]] = {}
        self.syncs = 0  # (the first is the empty server's, below)
        self.sync()
        self.next_sync = self._next(self.synced_at)
        self.failovers = 0

    # -- clients ----------------------------------------------------------------------------

    def client(self) -> Any:
        """A sync client (a ``redis.Redis``): what the lease uses."""
        return fakeredis.FakeRedis(server=self.server)

    def async_client(self) -> Any:
        """An asyncio client (a ``redis.asyncio.Redis``): what the bridge uses."""
        return fakeredis.FakeAsyncRedis(server=self.server)

    def connect(self, url: str, keys_dir: str | None = None) -> Any:  # noqa: ARG002
        """``lease.connect``'s shape (``lease.Connect``): the URL names no real server here.
        The client can be cut off alone (``CuttableRedis.cut``: a partition between one
        node and the store)."""
        return CuttableRedis(server=self.server)

    def async_connect(self, url: str) -> Any:  # noqa: ARG002
        """``RedisWriter``'s client factory (``connect``): the URL names no real server."""
        return self.async_client()

    # -- replication --------------------------------------------------------------------------

    def _next(self, now: float) -> float:
        if self.lag is None:
            return float("inf")
        return now + self.rng.uniform(*self.lag)

    def sync(self) -> None:
        """The replica catches up with the primary now: the keys written since its last sync
        are copied (``dirty``), the others are already the same."""
        with self.server.lock:
            for n, db in self.server.dbs.items():
                image = self.replica.setdefault(n, {})
                for key in db.dirty:
                    item = db._dict.get(key)
                    if item is None:
                        image.pop(key, None)
                    else:
                        image[key] = _snapshot(item)
                db.dirty = set()
        self.synced_at = self.clock.monotonic()
        self.syncs += 1

    def start(self) -> None:
        """(A node of an in-process cluster: nothing to start.)"""

    def close(self) -> None:
        """(Nothing to close: the data stays readable after the cluster stops.)"""

    def turn(self) -> None:
        """The replication link's part of a simulation round: catch up once the seeded lag
        has passed (so at any moment the replica is the primary as of ``synced_at``)."""
        now = self.clock.monotonic()
        if now >= self.next_sync and self.server.connected:
            self.sync()
            self.next_sync = self._next(now)

    def failover(self, rng: random.Random | None = None,
                 next_lag: float | None = None) -> list[bytes]:  # fmt: skip
        """Promote the replica: the primary's data becomes the replica's image (the writes
        since its last sync are lost), its script cache empty. ``next_lag``: how far the new
        replica trails at first (a replayed failover's, from its trace); else ``rng``
        (default: the store's own) draws it. Returns the keys written since the last sync
        (what was lost, or written back to the same value)."""
        lost: set[bytes] = set()
        with self.server.lock:
            for n, db in self.server.dbs.items():
                lost |= db.dirty
                image = self.replica.get(n, {})
                db._dict = {key: _restore(snap) for key, snap in image.items()}
                heap = [(item.expireat, k) for k, item in db._dict.items()
                        if item.expireat is not None]  # fmt: skip
                heapq.heapify(heap)
                db._expiry_heap = heap
                db.dirty = set()
            self.server.script_cache.clear()
        self.failovers += 1
        self.synced_at = now = self.clock.monotonic()
        if next_lag is None and self.lag:
            next_lag = (rng or self.rng).uniform(*self.lag)
        self.next_sync = now + next_lag if self.lag and next_lag is not None else float("inf")
        return sorted(lost)

    # -- outages ------------------------------------------------------------------------------

    def down(self) -> None:
        """An outage: every call raises ``redis.ConnectionError`` until ``up`` (nothing lost)."""
        self.server.connected = False

    def up(self) -> None:
        self.server.connected = True

    @property
    def is_up(self) -> bool:
        return bool(self.server.connected)

"""Bridge process: shard event PUB streams → Redis Streams, in order, exactly once.

Correctness comes from sequence numbers, not from the socket (PUB drops silently at its
high-water mark):

* Every event carries its shard's ``seq``. Entries are written with the explicit stream ID
  ``<seq>-0``, so Redis itself refuses a second copy ("equal or smaller than the target stream top
  item") and a restarted bridge can never duplicate.
* The bridge resumes from the last ID in ``shardex:events:<shard>``. A hole in the seqs it
  receives (still open after ``hole_wait``), or a shard whose ``seq`` (polled every
  ``poll_interval``) was ahead of what is written one poll ago, is repaired by asking that shard
  to re-send the range (``OP_EVENTS``: its in-memory ring, else its journal). A range that is
  gone is logged as an ALERT and counted (``shardex_bridge_lost_events_total``), never hidden.
* Writes are batched into one server-side script call per batch (``EVALSHA`` of a msgpack blob):
  the script does one ``XADD`` per event into ``shardex:events:<shard>`` and one per trade into
  ``shardex:trades:<SYMBOL>``. Encoding one blob instead of thousands of redis-py commands is what
  lifts the write rate past redis-py's own ~28k commands/s here.
* Redis down: the batch is retried with back-off; on reconnect the bridge re-reads the last
  written seq from Redis (an AOF may have lost its last second) and repairs from there.

Structure. ``ShardTracker`` is the socket-free, clock-free core of one shard (what to write next,
which range to repair, what is lost, when the shard is stalled, when Redis is ahead of the
shard); ``Bridge`` is the asyncio loop that drives one tracker per shard. ``decode_pub``,
``check_event``, ``parse_status`` and ``parse_events_reply`` are pure decoders: whatever a peer
sends (any msgpack value in any position), they return good events or raise ``Malformed``; the
loop counts it in ``shardex_bridge_malformed_total{source}`` and goes on. No task ever dies of
input.

Requests to a shard (status polls, repairs) go over one DEALER per shard read by one task that
hands each reply to the waiter of its request id (``ShardLink``): no reply is ever taken by the
wrong waiter. A request with no answer times out and is retried with a growing timeout (a repair
answered late is still used when it arrives).

Alerts (one ``ALERT`` log line, ``shardex_bridge_alerts_total{shard,kind}``):

* ``stalled``: the shard answers its status polls, is ahead of Redis, yet nothing has been written
  for ``stall_after`` seconds (``shardex_bridge_stalled{shard}`` is 1 until writes resume).
* ``lost``: a range the shard can no longer re-send.
* ``conflict``: Redis holds a *different* entry at our ID, or a stream top above our ID with no
  entry at it (a forged/foreign entry, another cluster writing the same keys, a shard restarted
  without its journal). Policy: that one entry is **not** stored in that stream; it is counted in
  ``shardex_bridge_conflicts_total{shard,stream}`` and the bridge moves on (every other stream,
  shard and later event keeps flowing; no crash, no retry loop). An identical entry at our ID is a
  true duplicate (``shardex_bridge_duplicates_total``). The events of a trade whose trades stream
  conflicts are still in ``shardex:events:<shard>``. To recover the events-stream entries:
  delete the foreign entries (``XDEL``) and restart the bridge; it resumes from the stream's top
  and re-fetches the rest from the shard's journal.
* ``auth``: a shard or the router refused the bridge's CURVE key (unknown, revoked, or not allowed
  to read events), or a shard has another cluster's server key. The bridge reconnects with a
  growing pause (libzmq itself gives up on a refused key) and never counts refused repairs as
  lost events. ``shard`` is ``router`` for the router.
* ``redis``: Redis refused the bridge's credentials, a command or a key (ACL), or a write; the
  bridge retries with a pause. Logged URLs never show a password (``redisauth.mask_url``).
* ``behind``: a shard reports a seq below what Redis already holds for it (a foreign top entry,
  or a shard restarted without its journal). The bridge rewinds to the highest entry at or below
  the shard's seq and goes on; whatever then meets a foreign entry is a counted ``conflict``.

Replicated shards (issue 15; engine shards and account shards alike): a leader's PUB messages
carry its epoch (a 4th field) and its HELLO to the router carries it too. The bridge keeps the
newest epoch seen per shard: a PUB message of an older epoch (a deposed leader's) is dropped
and counted (``shardex_bridge_stale_epoch_total{shard}``, a ``conflict`` ALERT); each write
carries that epoch to WRITE_SCRIPT, which refuses it if ``<stream key>:epoch`` holds a newer
one (``shardex:events:I:epoch``, ``shardex:balances:J:epoch``). A shard that stops answering,
or answers ``not_leader`` (a standby now holds that endpoint), is looked up in the router's
topology and, once a newer epoch registered elsewhere, its SUB and DEALER move there
(``_follow_leader``); the new leader serves the same journal, so seqs continue and whatever
was missed is repaired from it; an event seen from both leaders is written once (by seq).

Identity (``BridgeConfig.keys_dir``; None is the insecure lab mode): the bridge holds its own
process key (``KeyStore.process_key("bridge", "bridge")``, role ``bridge``) and is a CURVE client
on every socket: the SUB to each shard's PUB, each shard's DEALER, and the topology request to the
router. Its Redis URL may name user ``bridge`` without a password; the password then comes from
``KEYS_DIR/redis.json`` (``redisauth.resolve_url``), so it is never on a command line.

The PUB channel is trusted for content (a well-formed event with a plausible seq is written as
sent); malformed input is dropped and counted, and a seq beyond what the shard says it has is
discarded when a repair reveals it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import msgpack
import redis.asyncio as aioredis
import zmq
import zmq.asyncio
from prometheus_client import Counter, Gauge, Histogram
from redis.exceptions import AuthenticationError as RedisAuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from zmq.utils.monitor import parse_monitor_message

from shardex.accounts.assets import AssetTable
from shardex.accounts.codes import AE_BALANCE, AE_FEES, AE_NAMES
from shardex.auth import AuthError, KeyFile, KeyStore, client_socket
from shardex.engine import Market
from shardex.engine.codes import EV_ACCEPTED, EV_AMENDED, EV_CANCELLED, EV_REJECTED, EV_TRADE
from shardex.metrics import LATENCY_BUCKETS, serve
from shardex.recovery import describe as describe_recovery
from shardex.redisauth import RedisAuthError, mask_url, resolve_url, url_user
from shardex.wire.protocol import (
    OP_EVENTS,
    OP_STATUS,
    VERSION,
    decode_reply,
    encode_request,
    event_to_json,
    not_leader_epoch,
    unpackb,
)
from shardex.wire.transport import (
    AsyncReplies,
    RequestIds,
    TopologyError,
    parse_topology,
    split_endpoints,
    topology_frames,
)

log = logging.getLogger("shardex.bridge")

PREFIX = "shardex:"

# One call writes a whole batch. KEYS: the events stream, then every trades stream the batch
# writes (declared, so Redis checks the caller's ACL on all of them before the script runs: a
# bridge user limited to ``~shardex:*`` is refused the whole batch, never half of it).
# ARGV: blob, trades key prefix, maxlen.
# blob = msgpack [[id, [field, value, ...], symbol-or-nil, [trade fields...]], ...]
# Returns {written, dups, trades, conflicts, 0, deleted} where conflicts is a flat list
# [stream key, id, reason, ...] of entries that Redis holds differently (or cannot take), and
# deleted [stream key, entries removed, ...] names each stream of the batch that lost entries
# although the bridge never trims (maxlen 0): no ACL can stop a writer's XADD MAXLEN/MINID, so
# the bridge reports it (XINFO STREAM: entries-added minus length, Redis/Valkey >= 7.0).
# Replicated shards (issue 15): ARGV[4] is the leader epoch the batch was received under and the
# last KEY is ``<events key>:epoch``, the highest epoch written for the shard: a batch of an
# older epoch writes nothing and returns {0, 0, 0, {}, that epoch} (check epoch, then XADD, in
# one script: no writer of a deposed epoch can slip an entry in). ARGV[4] absent or 0: no check.
WRITE_SCRIPT = """
local evs = cmsgpack.unpack(ARGV[1])
local stream, tprefix, maxlen = KEYS[1], ARGV[2], ARGV[3]
local epoch = tonumber(ARGV[4] or '0') or 0
local nkeys = #KEYS
if epoch > 0 then
  local ekey = KEYS[nkeys]
  nkeys = nkeys - 1
  local cur = tonumber(redis.call('GET', ekey) or '0') or 0
  if cur > epoch then
    return {0, 0, 0, {}, cur}
  end
  if cur < epoch then
    redis.call('SET', ekey, epoch)
  end
end
local declared = {}
for i = 2, nkeys do
  declared[KEYS[i]] = true
end
local written, dups, trades = 0, 0, 0
local conflicts = {}
local function seqof(id)
  return tonumber(string.match(id, '^(%d+)')) or 0
end
-- 0 written, 1 identical entry already there, 2 conflict (reason in the second value)
local function add(key, id, fields)
  local r
  if maxlen ~= '0' then
    r = redis.pcall('XADD', key, 'MAXLEN', '~', maxlen, id, unpack(fields))
  else
    r = redis.pcall('XADD', key, id, unpack(fields))
  end
  if type(r) ~= 'table' or not r.err then
    return 0
  end
  if not string.find(r.err, 'equal or smaller', 1, true) then
    if string.find(r.err, 'WRONGTYPE', 1, true) then
      return 2, 'key holds another type'
    end
    return -1, r.err
  end
  local cur = redis.call('XRANGE', key, id, id)
  if #cur == 1 then
    local f = cur[1][2]
    if #f == #fields then
      local same = true
      for k = 1, #f do
        if f[k] ~= fields[k] then
          same = false
          break
        end
      end
      if same then
        return 1
      end
    end
    return 2, 'a different entry holds this id'
  end
  if maxlen ~= '0' and redis.call('XLEN', key) >= tonumber(maxlen) then
    local first = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
    if #first == 1 and seqof(id) < seqof(first[1][1]) then
      return 1  -- trimmed away below the stream's first entry: written long ago
    end
  end
  return 2, 'a foreign entry above this id tops the stream'
end
for i = 1, #evs do
  local e = evs[i]
  local s, why = add(stream, e[1], e[2])
  if s == -1 then
    return redis.error_reply(why)
  end
  if s == 1 then
    dups = dups + 1
  else
    if s == 0 then
      written = written + 1
    else
      conflicts[#conflicts + 1] = stream
      conflicts[#conflicts + 1] = e[1]
      conflicts[#conflicts + 1] = why
    end
    if e[3] then
      local key = tprefix .. e[3]
      if not declared[key] then
        return redis.error_reply('ERR trades stream ' .. key .. ' not declared in KEYS')
      end
      local t, twhy = add(key, e[1], e[4])
      if t == -1 then
        return redis.error_reply(twhy)
      end
      if t == 0 then
        trades = trades + 1
      elseif t == 2 then
        conflicts[#conflicts + 1] = key
        conflicts[#conflicts + 1] = e[1]
        conflicts[#conflicts + 1] = twhy
      end
    end
  end
end
-- a stream this bridge never trims (maxlen 0) with deleted entries: someone else trimmed it
local deleted = {}
if maxlen == '0' then
  for i = 1, nkeys do
    local info = redis.pcall('XINFO', 'STREAM', KEYS[i])
    if type(info) == 'table' and not info.err then
      local f = {}
      for k = 1, #info - 1, 2 do
        f[info[k]] = info[k + 1]
      end
      local gone = (tonumber(f['entries-added']) or 0) - (tonumber(f['length']) or 0)
      if gone > 0 then
        deleted[#deleted + 1] = KEYS[i]
        deleted[#deleted + 1] = gone
      end
    end
  end
end
return {written, dups, trades, conflicts, 0, deleted}
"""

WRITTEN = Counter("shardex_bridge_events_written_total", "Events written to Redis", ["shard"])
TRADES = Counter("shardex_bridge_trades_written_total", "Trades written to Redis", ["shard"])
DUPS = Counter(
    "shardex_bridge_duplicates_total", "Entries Redis refused as already written", ["shard"]
)
REPAIRED = Counter(
    "shardex_bridge_repaired_events_total", "Events fetched again to fill gaps", ["shard"]
)
LOST = Counter(
    "shardex_bridge_lost_events_total", "Events no longer available anywhere (ALERT)", ["shard"]
)
CONFLICTS = Counter(
    "shardex_bridge_conflicts_total",
    "Entries not stored because Redis holds a different/foreign entry there (ALERT)",
    ["shard", "stream"],
)
ALERTS = Counter(
    "shardex_bridge_alerts_total", "ALERT log lines raised by the bridge", ["shard", "kind"]
)
ALERT_KINDS = ("stalled", "lost", "conflict", "behind", "redis", "auth")
STALLED = Gauge(
    "shardex_bridge_stalled",
    "1 while a reachable shard is ahead of Redis and nothing is written for it",
    ["shard"],
)
MALFORMED = Counter(
    "shardex_bridge_malformed_total",
    "Messages or events from shards that could not be decoded (dropped)",
    ["source"],
)
MALFORMED_SOURCES = ("pub", "reply")
STALE_EPOCH = Counter(
    "shardex_bridge_stale_epoch_total",
    "PUB messages dropped (and batches not written) because they came from a leader epoch "
    "older than the newest seen for the shard (issue 15: a deposed leader)",
    ["shard"],
)
LAG = Gauge("shardex_bridge_lag_events", "Shard seq minus last seq written to Redis", ["shard"])
LAST = Gauge("shardex_bridge_last_seq", "Last seq written to Redis", ["shard"])
XADD_TIME = Histogram(
    "shardex_bridge_write_seconds", "Time of one batch write to Redis", buckets=LATENCY_BUCKETS
)
REDIS_UP = Gauge("shardex_bridge_redis_up", "1 when the last Redis call succeeded")

CLOSE_WAIT = 1.0  # seconds a stopping bridge waits to close its Redis connections
RESUME_SCAN = 1000  # entries looked at from a stream's top to find our last one
MAX_SEQ = (1 << 63) - 1  # stream IDs are 64-bit; anything above is not a seq
MAX_STR = 1024  # chars of any string field of an event (the engine's are ≤ ~300)

_SEQ = itemgetter(1)
_BALANCE_KINDS = (AE_BALANCE, AE_FEES)
_TRADE_TYPES = (int, int, str, int, int, str, str, int, int)


# -- pure decoders --------------------------------------------------------------------------------


class Malformed(ValueError):
    """Input from a shard that is not what the protocol says; the message says what."""


def check_event(ev: Any, markets: Mapping[str, Market]) -> bool:
    """True if ``ev`` is an event tuple the bridge can format and write (see engine/codes.py).

    Checks exactly what formatting relies on: types (``bool`` is not an ``int`` here), a seq that
    fits a stream ID, a known symbol where prices/sizes need its market, bounded strings.
    """
    if type(ev) is not tuple or len(ev) < 4:
        return False
    kind, seq, symbol = ev[0], ev[1], ev[2]
    if type(seq) is not int or not 0 < seq <= MAX_SEQ or type(kind) is not int:
        return False
    if type(symbol) is not str or len(symbol) > MAX_STR:
        return False
    if kind == EV_TRADE:
        if len(ev) != 9 or symbol not in markets:
            return False
        _, _, _, price, qty, taker, maker, side, trade_id = ev
        return (
            type(price) is int
            and type(qty) is int
            and type(taker) is str
            and type(maker) is str
            and len(taker) <= MAX_STR
            and len(maker) <= MAX_STR
            and type(side) is int
            and 0 <= side <= 1
            and type(trade_id) is int
        )
    oid = ev[3]
    if type(oid) is not str or len(oid) > MAX_STR:
        return False
    if kind == EV_ACCEPTED:
        return True
    if kind == EV_REJECTED:
        # (..., reason, code): any int code formats (an unknown one as "invalid")
        return len(ev) >= 6 and type(ev[4]) is str and len(ev[4]) <= MAX_STR and type(ev[5]) is int
    if kind == EV_CANCELLED:
        return (
            len(ev) >= 6
            and symbol in markets
            and type(ev[4]) is str
            and len(ev[4]) <= MAX_STR
            and type(ev[5]) is int
        )
    if kind == EV_AMENDED:
        return len(ev) >= 6 and symbol in markets and type(ev[4]) is int and type(ev[5]) is int
    return False


def check_events(events: Any, markets: Mapping[str, Market]) -> tuple[list[tuple], int]:
    """A decoded event array → (good events, number of bad ones dropped)."""
    if type(events) is not tuple:
        raise Malformed(f"events must be an array, got {type(events).__name__}")
    good: list[tuple] = []
    append = good.append
    for ev in events:
        # fast path for the bulk (trades): one C-level type comparison, then the values
        if (
            type(ev) is tuple
            and tuple(map(type, ev)) == _TRADE_TYPES
            and ev[0] == EV_TRADE
            and 0 < ev[1] <= MAX_SEQ
            and ev[2] in markets
            and 0 <= ev[7] <= 1
            and len(ev[5]) <= MAX_STR
            and len(ev[6]) <= MAX_STR
        ) or check_event(ev, markets):
            append(ev)
    return good, len(events) - len(good)


def check_account_event(ev: Any, assets: AssetTable) -> bool:
    """True if ``ev`` is an account shard event (``shardex.accounts.codes``) the bridge can
    track, and — for the balance and fee events it writes — format: exact types, a known asset,
    no negative amount, bounded strings. Other kinds only need a plausible seq."""
    if type(ev) is not tuple or len(ev) < 2:
        return False
    kind, seq = ev[0], ev[1]
    if type(kind) is not int or type(seq) is not int or not 0 < seq <= MAX_SEQ:
        return False
    if kind == AE_BALANCE:
        if len(ev) != 8:
            return False
        _, _, account, asset, avail, held, why, ref = ev
        return (
            all(type(v) is str and len(v) <= MAX_STR for v in (account, why, ref))
            and type(asset) is str
            and asset in assets.units
            and type(avail) is int
            and type(held) is int
            and avail >= 0
            and held >= 0
        )
    if kind == AE_FEES:
        return (
            len(ev) == 4
            and type(ev[2]) is str
            and ev[2] in assets.units
            and type(ev[3]) is int
            and ev[3] >= 0
        )
    return 0 <= kind < len(AE_NAMES)


def check_account_events(events: Any, assets: AssetTable) -> tuple[list[tuple], int]:
    """A decoded account-shard event array → (good events, number of bad ones dropped)."""
    if type(events) is not tuple:
        raise Malformed(f"events must be an array, got {type(events).__name__}")
    good = [ev for ev in events if check_account_event(ev, assets)]
    return good, len(events) - len(good)


def _pub_envelope(payload: Any, shards: int, what: str, with_epoch: bool = False) -> Any:
    """``[VERSION, shard, events]`` of an engine or account shard's PUB → (shard, events),
    checked as a whole (``Malformed`` if not); the events are the caller's to check.
    ``with_epoch``: also accept a 4th field, a replicated leader's epoch (an int >= 1), and
    return (shard, events, epoch or None)."""
    if not isinstance(payload, bytes):
        raise Malformed("payload is not bytes")
    try:
        msg = unpackb(payload)
    except Exception as exc:  # msgpack raises many types for garbage; all mean the same here
        raise Malformed(f"not msgpack ({type(exc).__name__})") from None
    if type(msg) is not tuple or not (len(msg) == 3 or (with_epoch and len(msg) == 4)):
        raise Malformed(f"expected [version, {what}, events]")
    version, shard, events = msg[:3]
    if type(version) is not int or version != VERSION:
        raise Malformed(f"unsupported protocol version {str(version)[:20]!r}")
    if type(shard) is not int or not 0 <= shard < shards:
        raise Malformed(f"{what} {str(shard)[:20]!r} is not one of 0..{shards - 1}")
    if not with_epoch:
        return shard, events
    epoch = msg[3] if len(msg) == 4 else None
    if epoch is not None and (type(epoch) is not int or not 0 < epoch < 1 << 63):
        raise Malformed(f"epoch {str(epoch)[:20]!r} is not a positive int")
    return shard, events, epoch


def decode_account_pub(
    payload: Any, shards: int, assets: AssetTable
) -> tuple[int, list[tuple], int]:
    """One account shard PUB payload ``[VERSION, j, [event, ...]]`` (or with a 4th field, the
    epoch of a replicated leader) → (j, good events, bad count); ``Malformed`` when the message
    as a whole is unusable (as ``decode_pub``)."""
    return decode_account_pub_epoch(payload, shards, assets)[:3]  # type: ignore[return-value]


def decode_account_pub_epoch(
    payload: Any, shards: int, assets: AssetTable
) -> tuple[int, list[tuple], int, int | None]:
    """``decode_account_pub`` plus the publisher's leader epoch: ``[VERSION, j, events,
    epoch]`` from a replicated account shard's leader (issue 15), None from a single-process
    account shard (3 fields). The bridge drops a message of an epoch older than the newest it
    has seen for ``j`` (a deposed leader's), exactly as for engine shards."""
    shard, events, epoch = _pub_envelope(payload, shards, "account shard", with_epoch=True)
    good, bad = check_account_events(events, assets)
    return shard, good, bad, epoch


def decode_pub(
    payload: Any, shards: int, markets: Mapping[str, Market]
) -> tuple[int, list[tuple], int]:
    """One PUB payload ``[VERSION, shard, [event, ...]]`` → (shard, good events, bad count).

    Raises ``Malformed`` when the message as a whole is unusable (not msgpack, wrong shape or
    version, a shard index outside ``0..shards-1``).
    """
    return decode_pub_epoch(payload, shards, markets)[:3]  # type: ignore[return-value]


def decode_pub_epoch(
    payload: Any, shards: int, markets: Mapping[str, Market]
) -> tuple[int, list[tuple], int, int | None]:
    """``decode_pub`` plus the publisher's leader epoch: ``[VERSION, shard, events, epoch]``
    from a replicated leader (issue 15), None from a single-process shard (3 fields)."""
    shard, events, epoch = _pub_envelope(payload, shards, "shard", with_epoch=True)
    good, bad = check_events(events, markets)
    return shard, good, bad, epoch


def denied(error: Any) -> bool:
    """True if a shard's error text says our key may not do this (not a fault of the data)."""
    if not isinstance(error, str):
        return False
    return error.startswith("authentication failed") or error.endswith("not allowed for this key")


def _result(error: Any, results: Any) -> dict:
    if error is not None:
        raise Malformed(f"shard answered with an error: {str(error)[:100]}")
    if type(results) is not tuple or len(results) != 1 or not isinstance(results[0], dict):
        raise Malformed("expected one result map")
    return results[0]


def parse_status(error: Any, results: Any) -> int:
    """``decode_reply`` of an ``OP_STATUS`` request → the shard's seq, or ``Malformed``."""
    res = _result(error, results)
    seq = res.get("seq")
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise Malformed(f"status seq {str(seq)[:20]!r} is not a seq")
    return seq


def parse_events_reply(
    error: Any,
    results: Any,
    first: int,
    last: int,
    markets: Mapping[str, Market],
    check: Callable[[Any], tuple[list[tuple], int]] | None = None,
) -> tuple[list[tuple] | None, str | None, int | None, int]:
    """``decode_reply`` of ``(OP_EVENTS, first, last)`` → (events, gone reason, shard seq, bad).

    ``events`` holds the well-formed events whose seq lies in ``first..last``; ``gone`` is the
    shard's reason when it cannot re-send the range (then ``events`` is None); ``shard seq`` is
    what the shard says it has (None if it did not say); ``bad`` counts dropped garbage.
    """
    res = _result(error, results)
    seq = res.get("seq")
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        seq = None
    if "error" in res:
        return None, str(res["error"])[:200], seq, 0
    if check is None:
        good, bad = check_events(res.get("events"), markets)
    else:  # an account shard's events (``check_account_events`` with its asset table)
        good, bad = check(res.get("events"))
    inside = [ev for ev in good if first <= ev[1] <= last]
    return inside, None, seq, bad + len(good) - len(inside)


# -- per-shard decision logic (no sockets, no clock) ----------------------------------------------


@dataclass
class StatusOutcome:
    """What one status answer changed: the loop logs and measures these."""

    behind: bool = False  # the shard is below what Redis holds: rewind (see ShardTracker)
    stalled: bool | None = None  # True: became stalled, False: recovered, None: no change


class ShardTracker:
    """Seq tracking of one shard: what to write next, what to repair, what is lost or stalled.

    Driven by the loop with plain values (events, seqs, ``now`` in seconds); it never touches a
    socket or a clock, so every decision is unit-tested alone. One writer: the loop's writer task
    is the only caller of ``take``/``written``/``putback``/``rewind``; ``accept`` and
    ``on_status`` only add information.
    """

    def __init__(
        self,
        index: int,
        *,
        max_pending: int = 2_000_000,
        hole_wait: float = 0.1,
        stall_after: float = 5.0,
    ) -> None:
        self.index = index
        self.max_pending = max_pending  # beyond this, received events are dropped (and repaired)
        self.hole_wait = hole_wait  # a hole younger than this may still fill from PUB
        self.stall_after = stall_after
        self.last = 0  # last seq known written to Redis
        self.pending: list[tuple] = []  # received, not yet written (any order, copies allowed)
        self.shard_seq = 0  # the shard's seq as its last status answer said
        self.prev_poll = 0  # the shard's seq one poll ago: must be written by now
        self.repair_to = 0  # repair up to here once nothing pending is in the way
        self.lost = 0
        self.conflicted = 0
        self.dropped = 0  # received past max_pending (to be repaired)
        self.stalled = False
        self.behind_at: int | None = None  # shard seq to rewind to (writer acts on it)
        # ``last`` as read from Redis is trusted only once a status answer sent after the read
        # shows the shard at or above it (a foreign top entry must not hide the shard's events)
        self.verified = False
        self._check_from: float | None = None  # statuses sent after this compare with ``last``
        self._resumed_last = 0
        self._progress_last = 0
        self._progress_at = 0.0
        self._hole: tuple[int, int] | None = None  # (last, first pending seq) of the open hole
        self._hole_since = 0.0
        self._sorted = True

    # information in

    def resume(self, last: int, now: float) -> None:
        """``last`` as read from Redis (start-up, after an outage). The next status answer sent
        after ``now`` checks that the shard is not below it; nothing is written until then."""
        self.verified = False
        self.last = last
        self._resumed_last = last
        self._check_from = now
        self._progress_last, self._progress_at = last, now

    def accept(self, events: list[tuple]) -> None:
        """Events received from PUB (checked by ``check_event``): queued unless over the cap."""
        p = self.pending
        if len(p) >= self.max_pending:
            self.dropped += len(events)
            return
        if p and events and events[0][1] <= p[-1][1]:
            self._sorted = False
        p.extend(events)

    def accept_repair(self, events: list[tuple], shard_seq: int | None) -> None:
        """Events a repair brought (whatever the cap). ``shard_seq``: the shard's seq at the
        time; a pending seq above it was never sent by that shard and is discarded."""
        if events:
            self._sorted = False
            self.pending.extend(events)
        if shard_seq is not None and not events:
            bogus = [ev for ev in self.pending if ev[1] > shard_seq]
            if bogus:
                self.pending = [ev for ev in self.pending if ev[1] <= shard_seq]
                self.dropped += len(bogus)
            self.repair_to = min(self.repair_to, shard_seq)

    def on_status(self, seq: int, sent_at: float, now: float) -> StatusOutcome:
        """The shard answered a status request sent at ``sent_at`` with its ``seq``."""
        out = StatusOutcome()
        check = self._check_from is not None and sent_at >= self._check_from
        if (check and seq < self._resumed_last) or seq < self.shard_seq:
            out.behind = True
            self.behind_at = seq
        if check:
            self._check_from = None
            self.verified = True
        # What the shard had one poll ago and is still not written is lost in transit (e.g.
        # the tail of a burst dropped by PUB): repair it.
        if self.prev_poll > self.last:
            self.repair_to = max(self.repair_to, self.prev_poll)
        self.prev_poll = seq
        self.shard_seq = seq
        if self.last != self._progress_last or seq <= self.last:
            self._progress_last, self._progress_at = self.last, now
        stalled = seq > self.last and now - self._progress_at >= self.stall_after
        if stalled != self.stalled:
            self.stalled = out.stalled = stalled
        return out

    # decisions out

    def take(self, limit: int) -> list[tuple]:
        """The next contiguous run of pending events from ``last + 1`` (at most ``limit``).

        Older seqs and second copies are dropped. The caller must then call ``written`` (or
        ``putback`` if the write did not happen) before taking again.
        """
        p = self.pending
        if not p or not self.verified:
            return []
        if not self._sorted:
            p.sort(key=_SEQ)
            self._sorted = True
        expect = self.last + 1
        n = len(p)
        i = 0
        while i < n and p[i][1] < expect:
            i += 1
        batch: list[tuple] = []
        while i < n:
            ev = p[i]
            s = ev[1]
            if s == expect:
                if len(batch) >= limit:
                    break
                batch.append(ev)
                expect += 1
            elif s > expect:
                break  # a hole
            i += 1  # s < expect: a second copy of what is in the batch
        if i:
            del p[:i]
        return batch

    def written(self, upto: int, now: float) -> None:
        if upto > self.last:
            self.last = upto
            self._progress_last, self._progress_at = upto, now

    def putback(self, batch: list[tuple]) -> None:
        """A batch that was not (or not surely) written: take it again later."""
        if batch:
            self.pending[:0] = batch
            self._sorted = False

    def gap(self, now: float) -> tuple[int, int] | None:
        """The range to ask the shard for, if any (call after ``take`` returned nothing)."""
        if not self.verified:
            return None
        nxt = self.last + 1
        p = self.pending
        if p:
            if not self._sorted:
                p.sort(key=_SEQ)
                self._sorted = True
            head = p[0][1]
            if head > nxt:
                # a hole: events may still be on their way (one batch is several PUB messages)
                if self._hole is None or self._hole[1] != head:
                    self._hole, self._hole_since = (self.last, head), now
                if now - self._hole_since >= self.hole_wait:
                    return nxt, head - 1
                return None
            self._hole = None
            return None
        self._hole = None
        if self.repair_to >= nxt:
            return nxt, self.repair_to
        return None

    def lose(self, first: int, last: int) -> int:
        """The shard cannot re-send ``first..last``: count it and move on. Returns the count."""
        if first != self.last + 1 or last < first:
            return 0
        n = last - first + 1
        self.lost += n
        self.last = last
        return n

    def rewind(self, last: int, now: float) -> None:
        """Redis was ahead of the shard: go on from ``last`` (the highest entry ≤ its seq)."""
        self.last = last
        self.behind_at = None
        self.repair_to = max(self.repair_to, self.shard_seq)
        self._progress_last, self._progress_at = last, now

    @property
    def lag(self) -> int:
        return max(0, self.shard_seq - self.last)


# -- transport: one DEALER per shard, replies matched to requests --------------------------------


class ShardLink:
    """Requests to one shard's direct port; replies are matched to their waiters by request id
    (``transport.AsyncReplies``: one reader task, so concurrent requests never take each
    other's answers). A reply whose request timed out is passed to that request's ``late``
    callback if it had one (a repair answered late still carries good events), else dropped.
    """

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        endpoint: str,
        on_malformed: Callable[[], None],
        key: KeyFile | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.IMMEDIATE, 1)  # no queueing toward a shard that is not there
        if key is not None:
            client_socket(self.sock, key)
        self.sock.connect(endpoint)
        self.replies = AsyncReplies(on_malformed)
        self.ids = RequestIds()

    async def read(self) -> None:
        """The reader task: forever dispatch replies by request id."""
        await self.replies.read(self.sock)

    async def request(
        self, cmd: tuple, timeout: float, late: Callable[[Any, Any], None] | None = None
    ) -> tuple[Any, Any] | None:
        """Send one command; (error, results) of its reply, or None if none came in time."""
        req = self.ids.next()
        fut = self.replies.expect(req)
        try:
            await self.sock.send_multipart([b"bridge", req, encode_request([cmd])], zmq.NOBLOCK)
        except zmq.Again:
            self.replies.forget(req)
            return None  # not connected (IMMEDIATE) or pipe full: as good as no answer
        try:
            payload = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self.replies.forget(req, late)
            return None
        return decode_reply(payload)

    def close(self) -> None:
        self.sock.close(0)


class Handshakes:
    """Watches one socket's CURVE handshakes (its monitor): a refusal is an ALERT and a reconnect.

    libzmq does not retry a connection whose key the server's ZAP handler refused: it would stay
    dead even after the key is registered again. So on a refusal the endpoint is disconnected and
    connected again after a pause (1 s, doubling up to ``MAX_PAUSE``), with one ALERT per refusal
    (rate-limited by ``alert``). A handshake that fails for another reason (the server has another
    cluster's key, or is not a CURVE server) is retried by libzmq itself; it is only reported.
    """

    MAX_PAUSE = 30.0
    EVENTS = (
        zmq.EVENT_HANDSHAKE_FAILED_AUTH
        | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_SUCCEEDED
    )

    def __init__(
        self,
        sock: zmq.asyncio.Socket,
        peers: Mapping[str, tuple[int | str, str]],
        alert: Callable[..., None],
    ) -> None:
        self.sock = sock
        self.peers = peers  # endpoint → (alert label: shard index or "router", what it is)
        self.alert = alert
        self.mon = sock.get_monitor_socket(self.EVENTS)
        self.pause: dict[str, float] = {}  # endpoint → pause before the next reconnect
        self.refused = 0
        self.failed = 0
        self._loop = asyncio.get_running_loop()

    async def run(self) -> None:
        while True:
            msg = await self.mon.recv_multipart()
            try:
                ev = parse_monitor_message(msg)
                endpoint = ev["endpoint"].decode("utf-8", "replace")
                event, value = int(ev["event"]), int(ev["value"])
            except Exception:  # a monitor message we cannot read: nothing to act on
                continue
            label, what = self.peers.get(endpoint, ("router", endpoint))
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                if self.pause.pop(endpoint, None) is not None:
                    log.info("%s (%s) accepts the bridge's key again", what, endpoint)
                continue
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.refused += 1
                pause = min(self.MAX_PAUSE, self.pause.get(endpoint, 0.5) * 2)
                self.pause[endpoint] = pause
                self.alert(
                    label,
                    "auth",
                    f"auth {endpoint}",
                    "%s (%s) refused the bridge's key (ZAP status %d): the bridge key is not "
                    "in that cluster's registry, revoked, or not allowed there; connecting "
                    "again in %.0f s",
                    what,
                    endpoint,
                    value,
                    pause,
                )
                self._loop.call_later(pause, self._reconnect, endpoint)
                continue
            self.failed += 1
            self.alert(
                label,
                "auth",
                f"handshake {endpoint}",
                "CURVE handshake with %s (%s) failed (%s): it has another cluster's server key "
                "or does not speak CURVE (insecure?); retrying",
                what,
                endpoint,
                "protocol error" if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL else "no detail",
            )

    def _reconnect(self, endpoint: str) -> None:
        if self.sock.closed:
            return
        try:
            self.sock.disconnect(endpoint)
        except zmq.ZMQError:
            pass  # libzmq already dropped it
        try:
            self.sock.connect(endpoint)
        except zmq.ZMQError as exc:
            log.warning("cannot connect to %s again: %s", endpoint, exc)

    def close(self) -> None:
        if not self.sock.closed:
            try:
                self.sock.disable_monitor()
            except zmq.ZMQError:
                pass
        self.mon.close(0)


# -- the process ----------------------------------------------------------------------------------


def event_fields(ev: tuple, markets: Mapping[str, Market], shard: int) -> list[str]:
    d = event_to_json(ev, markets)
    out = []
    for k, v in d.items():
        out.append(k)
        out.append(v if isinstance(v, str) else str(v))
    out.append("shard")
    out.append(str(shard))
    return out


STARTUP_GRACE_S = 60.0  # a shard that never answered yet may be recovering its journal this long


def still_starting(answered: bool, age: float, grace: float = STARTUP_GRACE_S) -> bool:
    """Whether a shard's silence is its start (never answered yet, within ``grace`` seconds
    of the bridge's start): said once at INFO, not as a WARNING of a shard that went quiet."""
    return not answered and age < grace


@dataclass
class ShardState:
    """The loop's side of one shard: its tracker, link and wake-up event."""

    index: int
    tracker: ShardTracker
    link: ShardLink | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    repair_timeout: float = 2.0
    unreachable: bool = False
    answered: bool = False  # it has answered a status request once (it is no longer starting)
    waiting_said: bool = False  # "waiting for it to answer" logged (once, while it starts)
    created: float = field(default_factory=time.monotonic)
    repaired_at: int = 0  # first seq of the last repair asked (no progress → pace the next)
    idle: int = 0
    # "events": an engine shard (``shardex:events:<i>`` + trades); "balances": an account shard
    # (issue 14): all its events are tracked by seq, its balance changes are written to
    # ``shardex:balances:<j>``
    kind: str = "events"
    # A replicated shard's newest leader epoch seen (PUB messages, topology): PUB messages of
    # an older epoch are dropped, and writes carry it (WRITE_SCRIPT checks it). 0: none seen.
    epoch: int = 0
    # endpoint → (alert label, what) of its DEALER's handshake watch; a followed leader's
    # direct endpoint is added, so a refused key there is reported under this shard's label
    peers: dict[str, tuple[int | str, str]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Metric/alert label: ``"3"`` for engine shard 3, ``"a3"`` for account shard 3."""
        return str(self.index) if self.kind == "events" else f"a{self.index}"

    @property
    def name(self) -> str:
        return f"shard {self.index}" if self.kind == "events" else f"account shard {self.index}"


@dataclass
class BridgeConfig:
    router: str  # router endpoint: the topology (shard PUB and direct endpoints) comes from it
    redis_url: str
    markets: Mapping[str, Market]
    prefix: str = PREFIX
    maxlen: int = 0  # 0: no trimming; else approximate MAXLEN ~ per stream
    batch: int = 2000  # events per script call
    sub_hwm: int = 1_000_000
    max_pending: int = 2_000_000  # per shard; beyond this we drop and repair later
    metrics_port: int | None = None
    poll_interval: float = 0.5
    status_timeout: float = 1.0
    repair_timeout: float = 2.0  # first wait for a repair answer; doubles up to 30 s
    stall_after: float = 5.0  # seconds without progress while the shard is ahead → ALERT
    hole_wait: float = 0.1
    # CURVE key store (``shardex.auth``): the bridge authenticates with its process key to the
    # router and every shard, and takes its Redis password from ``redis.json`` there when the
    # URL names a user without one. None: insecure (lab)
    keys_dir: str | None = None


class Bridge:
    def __init__(self, cfg: BridgeConfig) -> None:
        self.cfg = cfg
        self.key: KeyFile | None = None
        if cfg.keys_dir:
            self.key = KeyStore(cfg.keys_dir).process_key("bridge", "bridge")
        # the password (if it comes from the keys dir) lives only here and in redis-py
        url = resolve_url(cfg.redis_url, cfg.keys_dir, create=True)
        self.redis_shown = mask_url(url)
        self._password = url_user(url)[1]
        self.ctx = zmq.asyncio.Context()
        self.redis = aioredis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self.watches: list[Handshakes] = []
        self.sha: str | None = None
        self.shards: list[ShardState] = []
        self.endpoints: list[dict[str, Any]] = []
        # account shards (issue 14): their balance changes go to shardex:balances:<j>
        self.accounts: list[ShardState] = []
        self.account_endpoints: list[dict[str, Any]] = []
        self.sub: zmq.asyncio.Socket | None = None  # the engine shards' PUBs
        self.asub: zmq.asyncio.Socket | None = None  # the account shards' PUBs
        # each SUB's handshake-watch peers (endpoint → label, what), by ShardState.kind
        self._pub_peers: dict[str, dict[str, tuple[int | str, str]]] = {
            "events": {},
            "balances": {},
        }
        self.assets = AssetTable(cfg.markets)
        self.running = True
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._outage_lock = asyncio.Lock()
        self._fmt: dict[tuple[str, int, int], str] = {}
        self._alerted: dict[tuple[int, str], float] = {}  # (shard, what) → last ALERT time
        self._malformed_logged = 0.0
        self._deleted: dict[str, int] = {}  # stream → entries deleted, as last reported (ALERT)

    # -- setup ------------------------------------------------------------------------------------

    def _watch(
        self, sock: zmq.asyncio.Socket, peers: Mapping[str, tuple[int | str, str]]
    ) -> asyncio.Future | None:
        """Report (and recover from) refused handshakes on ``sock`` (secure mode only)."""
        if self.key is None:
            return None
        w = Handshakes(sock, peers, self._alert)
        self.watches.append(w)
        return asyncio.ensure_future(w.run())

    async def topology(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(engine shards, account shards) as the router sees them, once every one of them
        has registered; ``([], [])`` if the bridge stops meanwhile. Only returned, never
        stored here: the caller decides which endpoints it moves to (storing the account
        shards' endpoints on every engine-shard follow made a later account-shard follow see
        "no change" while its sockets still pointed at the old leader)."""
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self.key is not None:
            client_socket(sock, self.key)
        routers = split_endpoints(self.cfg.router)  # several routers: any of them answers
        watch = self._watch(sock, {ep: ("router", "the router") for ep in routers})
        for ep in routers:
            sock.connect(ep)
        ids = RequestIds()
        said: tuple[str, ...] | None = None  # what the last wait line named (said once)
        try:
            while self.running:
                await sock.send_multipart(topology_frames(ids.next()))
                missing: tuple[str, ...] = ("an answer from the router",)
                detail = ""
                if await sock.poll(2000):
                    frames = await sock.recv_multipart()
                    topo = _topology(frames)
                    accounts = _account_topology(frames)
                    if topo is not None and accounts is not None:
                        if said is not None:
                            log.info("every shard registered with the router %s", self.cfg.router)
                        return topo, accounts
                    missing, detail = _waiting_for(frames)
                if missing != said:  # once per change of what it waits for, not per poll
                    said = missing
                    log.info("waiting for %s to register with the router %s%s",
                             ", ".join(missing), self.cfg.router, detail)  # fmt: skip
                await asyncio.sleep(0.5)
        finally:
            if watch is not None:
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)
                self.watches.pop().close()
            sock.close(0)
        return [], []

    async def last_written(self, st: ShardState, at_most: int | None = None) -> int:
        """Seq of the highest entry of the shard's events stream that is ours (≤ ``at_most``).

        Our entries have ID ``<seq>-0`` and fields ``seq`` and ``shard`` that say the same; a
        foreign entry above them (forged, another writer) is skipped with an ALERT, so it can
        never make the bridge believe that events it never wrote are in Redis. Resuming lower
        than needed is safe: what is already there is recognised as a duplicate.
        """
        top = "+" if at_most is None else f"{at_most}-0"
        key = self._stream_key(st)
        entries = await self.redis.xrevrange(key, top, "-", count=RESUME_SCAN)
        want_shard = str(st.index).encode()
        for n, (eid, fields) in enumerate(entries):
            head, _, tail = eid.partition(b"-")
            if tail == b"0" and fields.get(b"seq") == head and fields.get(b"shard") == want_shard:
                if n:
                    self._foreign_top(st, n, entries[0][0])
                return int(head)
        if entries:
            self._foreign_top(st, len(entries), entries[0][0])
        return 0

    def _foreign_top(self, st: ShardState, n: int, top: bytes) -> None:
        self._alert(
            st.label,
            "conflict",
            "foreign top",
            "%s has %d foreign entries at its top (up to %s): not ours, resuming below them; "
            "our events at their IDs will be counted as conflicts",
            self._stream_key(st),
            n,
            _text(top),
        )

    def _events_key(self, shard: int) -> str:
        return f"{self.cfg.prefix}events:{shard}"

    def _stream_key(self, st: ShardState) -> str:
        """``shardex:events:<i>`` for an engine shard, ``shardex:balances:<j>`` for an account
        shard (resuming after a restart reads the top of this stream)."""
        if st.kind == "balances":
            return f"{self.cfg.prefix}balances:{st.index}"
        return self._events_key(st.index)

    # -- main -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Bridge until stopped. However it ends (``running`` cleared, or cancelled by a stop
        while it waits for Redis or the router), its Redis connections are closed."""
        try:
            await self._serve()
        finally:
            await self.close_redis()

    async def _serve(self) -> None:
        self.endpoints, self.account_endpoints = await self.topology()
        if not self.running:
            return
        n = len(self.endpoints)
        cfg = self.cfg
        self.shards = [
            ShardState(
                i,
                ShardTracker(
                    i,
                    max_pending=cfg.max_pending,
                    hole_wait=cfg.hole_wait,
                    stall_after=cfg.stall_after,
                ),
                repair_timeout=cfg.repair_timeout,
            )
            for i in range(n)
        ]
        for st, ep in zip(self.shards, self.endpoints, strict=True):
            st.epoch = ep.get("epoch", 0)  # a replicated shard's leader epoch (else 0)
        for i in range(n):
            s = str(i)
            STALLED.labels(s).set(0)
            for kind in ALERT_KINDS:
                ALERTS.labels(s, kind)
            LOST.labels(s)
        self.accounts = [
            ShardState(
                j,
                ShardTracker(
                    j,
                    max_pending=cfg.max_pending,
                    hole_wait=cfg.hole_wait,
                    stall_after=cfg.stall_after,
                ),
                repair_timeout=cfg.repair_timeout,
                kind="balances",
            )  # fmt: skip
            for j in range(len(self.account_endpoints))
        ]
        for st, ep in zip(self.accounts, self.account_endpoints, strict=True):
            st.epoch = ep.get("epoch", 0)  # a replicated account shard's leader epoch (else 0)
        for st in self.accounts:
            STALLED.labels(st.label).set(0)
            for kind in ALERT_KINDS:
                ALERTS.labels(st.label, kind)
            LOST.labels(st.label)
        for source in MALFORMED_SOURCES:
            MALFORMED.labels(source)
        await self._until_redis(self._sync_last)
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, cfg.sub_hwm)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        if self.key is not None:
            client_socket(sub, self.key)
        self.sub = sub
        pubs = self._pub_peers["events"]
        pubs.update({t["pub"]: (i, f"shard {i}'s PUB") for i, t in enumerate(self.endpoints)})
        watches = [self._watch(sub, pubs)]
        for st, t in zip(self.shards, self.endpoints, strict=True):
            sub.connect(t["pub"])
            st.link = ShardLink(self.ctx, t["direct"], self._reply_malformed, self.key)
            st.peers[t["direct"]] = (st.index, f"shard {st.index}'s direct port")
            watches.append(self._watch(st.link.sock, st.peers))
        log.info(
            "bridge up: %d shards → %s%s (resuming at seqs %s)",
            n,
            self.redis_shown,
            "" if self.key is None else ", authenticated as bridge",
            [s.tracker.last for s in self.shards],
        )
        asub = None
        if self.accounts:
            asub = self.asub = self.ctx.socket(zmq.SUB)
            asub.setsockopt(zmq.RCVHWM, cfg.sub_hwm)
            asub.setsockopt(zmq.SUBSCRIBE, b"")
            if self.key is not None:
                client_socket(asub, self.key)
            apubs = self._pub_peers["balances"]
            apubs.update({t["pub"]: (f"a{j}", f"account shard {j}'s PUB")
                          for j, t in enumerate(self.account_endpoints)})  # fmt: skip
            watches.append(self._watch(asub, apubs))
            for st, t in zip(self.accounts, self.account_endpoints, strict=True):
                asub.connect(t["pub"])
                st.link = ShardLink(self.ctx, t["direct"], self._reply_malformed, self.key)
                st.peers[t["direct"]] = (st.label, f"account shard {st.index}'s direct port")
                watches.append(self._watch(st.link.sock, st.peers))
            log.info(
                "balances of %d account shards → %sbalances:<j> (resuming at seqs %s)",
                len(self.accounts),
                cfg.prefix,
                [s.tracker.last for s in self.accounts],
            )
        tasks = [w for w in watches if w is not None]
        tasks.append(asyncio.ensure_future(self._reader(sub)))
        if asub is not None:
            tasks.append(asyncio.ensure_future(self._account_reader(asub)))
        for st in (*self.shards, *self.accounts):
            assert st.link is not None
            tasks.append(asyncio.ensure_future(st.link.read()))
            tasks.append(asyncio.ensure_future(self._poller(st)))
            tasks.append(asyncio.ensure_future(self._writer(st)))
        try:
            while self.running:
                await asyncio.sleep(0.2)
                for t in tasks:
                    if t.done() and t.exception() is not None:
                        raise t.exception()  # type: ignore[misc]
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in self.watches:
                w.close()
            sub.close(0)
            if asub is not None:
                asub.close(0)
            for st in (*self.shards, *self.accounts):
                if st.link is not None:
                    st.link.close()

    async def close_redis(self) -> None:
        """Drop the Redis connections without waiting on a server that is gone or stuck."""
        try:
            await asyncio.wait_for(self.redis.aclose(), CLOSE_WAIT)
        except (TimeoutError, *_TRANSIENT):
            pass

    async def _follow_leader(self, st: ShardState) -> None:
        """A shard that does not answer (or answers ``not_leader``) may have a new leader
        elsewhere (issue 15): ask the router, and move this shard's SUB and DEALER to the
        endpoints of a newer epoch only (the old leader's PUB is disconnected: nothing from an
        older epoch is read again). Engine shards and account shards alike: each kind has its
        own endpoint list (``endpoints`` / ``account_endpoints``) and SUB (``sub`` / ``asub``).
        Entries are written by seq, so an event seen from both leaders is written once.
        A shard that is not replicated (epoch 0) never moves: it comes back where it was."""
        accounts = st.kind == "balances"
        mine = self.account_endpoints if accounts else self.endpoints
        sub = self.asub if accounts else self.sub
        if not 0 <= st.index < len(mine) or sub is None or st.link is None:
            return
        topo, atopo = await self.topology()
        theirs = atopo if accounts else topo
        if len(theirs) != len(mine):
            return
        old, new = mine[st.index], theirs[st.index]
        st.epoch = max(st.epoch, new["epoch"])
        if new["epoch"] <= old.get("epoch", 0) or (new["pub"], new["direct"]) == (
            old["pub"], old["direct"]):  # fmt: skip
            mine[st.index] = {**old, "epoch": max(new["epoch"], old.get("epoch", 0))}
            return
        log.warning(
            "%s: leader epoch %d now at PUB %s, direct %s (was epoch %s)",
            st.name, new["epoch"], new["pub"], new["direct"], old.get("epoch"),
        )  # fmt: skip
        self._pub_peers[st.kind][new["pub"]] = (st.label, f"{st.name}'s PUB")
        st.peers[new["direct"]] = (st.label, f"{st.name}'s direct port")
        for sock, before, after in ((sub, old["pub"], new["pub"]),
                                    (st.link.sock, old["direct"], new["direct"])):  # fmt: skip
            if before != after:
                try:
                    sock.disconnect(before)
                except zmq.ZMQError:
                    pass
                sock.connect(after)
        st.link.endpoint = new["direct"]
        mine[st.index] = new

    async def _sync_last(self) -> None:
        now = time.monotonic()
        for s in (*self.shards, *self.accounts):
            s.tracker.resume(await self.last_written(s), now)
            LAST.labels(s.label).set(s.tracker.last)

    def _alert(self, shard: int | str, kind: str, key: str, msg: str, *args: Any) -> None:
        """One ALERT line per (shard, key) per 5 s; the counter counts every call."""
        ALERTS.labels(str(shard), kind).inc()
        now = time.monotonic()
        if now - self._alerted.get((shard, key), -1e9) >= 5.0:
            self._alerted[(shard, key)] = now
            log.error("ALERT " + msg, *args)

    def _refused(self, st: ShardState, what: str, why: Any) -> None:
        """A shard answered that the bridge's key may not ask this: ALERT, never lost events."""
        self._alert(
            st.label,
            "auth",
            f"refused {what}",
            "%s refuses the bridge's %s requests (%s): the bridge key must have role "
            "bridge in this cluster's registry; asking again",
            st.name,
            what,
            str(why)[:100],
        )

    def _malformed(self, source: str, n: int, why: str) -> None:
        MALFORMED.labels(source).inc(n)
        now = time.monotonic()
        if now - self._malformed_logged >= 5.0:
            self._malformed_logged = now
            log.warning("dropping malformed input from a shard's %s: %s", source, why)

    def _reply_malformed(self) -> None:
        self._malformed("reply", 1, "reply is not [request id, payload]")

    async def _reader(self, sub: zmq.asyncio.Socket) -> None:
        shards = self.shards
        n = len(shards)
        markets = self.cfg.markets
        while True:
            frames = await sub.recv_multipart()
            try:
                if len(frames) != 2:
                    raise Malformed(f"{len(frames)} frames, expected [topic, payload]")
                shard, events, bad, epoch = decode_pub_epoch(frames[1], n, markets)
            except Malformed as exc:
                self._malformed("pub", 1, str(exc))
                continue
            st = shards[shard]
            if epoch is not None and epoch != st.epoch:
                if epoch < st.epoch:  # a deposed leader's: what it says, the leader re-sends
                    self._stale_epoch(st, epoch)
                    continue
                st.epoch = epoch
            if bad:
                self._malformed("pub", bad, f"{bad} malformed events from shard {shard}")
            if events:
                st.tracker.accept(events)
                st.wake.set()

    def _stale_epoch(self, st: ShardState, epoch: int) -> None:
        STALE_EPOCH.labels(st.label).inc()
        self._alert(st.label, "conflict", "stale epoch",
                    "%s: dropped a PUB message of epoch %d (the newest seen is %d): a deposed "
                    "leader published", st.name, epoch, st.epoch)  # fmt: skip

    def _check_accounts(self, events: Any) -> tuple[list[tuple], int]:
        return check_account_events(events, self.assets)

    async def _account_reader(self, sub: zmq.asyncio.Socket) -> None:
        """The account shards' PUBs → their trackers (as ``_reader`` for engine shards: a
        message of an epoch older than the newest seen for its account shard is dropped and
        counted in ``shardex_bridge_stale_epoch_total{shard="aJ"}``)."""
        states = self.accounts
        while True:
            frames = await sub.recv_multipart()
            try:
                if len(frames) != 2:
                    raise Malformed(f"{len(frames)} frames, expected [topic, payload]")
                j, events, bad, epoch = decode_account_pub_epoch(
                    frames[1], len(states), self.assets
                )
            except Malformed as exc:
                self._malformed("pub", 1, str(exc))
                continue
            st = states[j]
            if epoch is not None and epoch != st.epoch:
                if epoch < st.epoch:  # a deposed leader's: what it says, the leader re-sends
                    self._stale_epoch(st, epoch)
                    continue
                st.epoch = epoch
            if bad:
                self._malformed("pub", bad, f"{bad} malformed events from account shard {j}")
            if events:
                st.tracker.accept(events)
                st.wake.set()

    async def _poller(self, st: ShardState) -> None:
        """Every poll interval: ask the shard its seq (lag, tail repair, stall and behind)."""
        tr = st.tracker
        s = st.label
        assert st.link is not None
        while True:
            sent = time.monotonic()
            reply = await st.link.request((OP_STATUS,), timeout=self.cfg.status_timeout)
            seq = None
            if reply is not None and denied(reply[0]):
                self._refused(st, "status", reply[0])
            elif reply is not None and not_leader_epoch(reply[0]) is not None:
                # a standby (or a fenced leader) holds this endpoint now: not garbage, not a
                # stall; the leader is elsewhere, find it (below)
                if not st.unreachable:
                    log.warning("%s at %s answers not leader (%s); following its leader",
                                st.name, st.link.endpoint, str(reply[0])[:200])  # fmt: skip
                    st.unreachable = True
            elif reply is not None:
                try:
                    seq = parse_status(*reply)
                except Malformed as exc:
                    self._malformed("reply", 1, f"status of {st.name}: {exc}")
            if seq is None:
                if not st.unreachable and still_starting(st.answered, sent - st.created):
                    if not st.waiting_said:  # (every shard is silent while the cluster starts)
                        log.info("%s does not answer yet (starting?): waiting for it", st.name)
                        st.waiting_said = True
                elif not st.unreachable:
                    log.warning("%s does not answer its status requests", st.name)
                    st.unreachable = True
                await self._follow_leader(st)
            else:
                st.answered = True
                if st.unreachable:
                    log.info("%s answers again", st.name)
                    st.unreachable = False
                out = tr.on_status(seq, sent, time.monotonic())
                if out.behind:
                    self._alert(
                        st.label,
                        "behind",
                        "behind",
                        "%s is at seq %d but Redis already holds entries above it "
                        "(last written %d): a foreign entry, or the shard lost its state; "
                        "rewinding to the highest entry at or below %d",
                        st.name,
                        seq,
                        tr.last,
                        seq,
                    )
                if out.stalled:
                    STALLED.labels(s).set(1)
                    self._alert(
                        st.label,
                        "stalled",
                        "stalled",
                        "%s is reachable and at seq %d, but Redis has been stuck at %d "
                        "for %.0f s (pending %d)",
                        st.name,
                        seq,
                        tr.last,
                        tr.stall_after,
                        len(tr.pending),
                    )
                elif out.stalled is False:
                    STALLED.labels(s).set(0)
                    log.info("%s is flowing again (Redis at seq %d)", st.name, tr.last)
                st.wake.set()
            LAG.labels(s).set(tr.lag)
            await asyncio.sleep(self.cfg.poll_interval)

    async def _writer(self, st: ShardState) -> None:
        tr = st.tracker
        batch_size = self.cfg.batch
        wake = st.wake
        while True:
            if not wake.is_set():
                try:
                    await asyncio.wait_for(wake.wait(), self.cfg.hole_wait)
                except TimeoutError:
                    pass
            wake.clear()
            if tr.behind_at is not None:
                last = await self._until_redis(lambda at=tr.behind_at: self.last_written(st, at))
                tr.rewind(last, time.monotonic())
                LAST.labels(st.label).set(last)
            while batch := tr.take(batch_size):
                await self._write(st, batch)
            gap = tr.gap(time.monotonic())
            if gap is not None:
                if gap[0] == st.repaired_at:
                    # the last repair did not move us: garbage or nothing came back; pace it
                    await asyncio.sleep(min(2.0, self.cfg.hole_wait * 2 ** min(st.idle, 5)))
                    st.idle += 1
                else:
                    st.idle = 0
                st.repaired_at = gap[0]
                await self._repair(st, *gap)
                wake.set()  # write what it brought, or ask again
            LAG.labels(st.label).set(tr.lag)

    async def _repair(self, st: ShardState, first: int, last: int) -> None:
        """Ask the shard for ``first..last`` once; feed what comes back to the tracker."""
        assert st.link is not None
        tr = st.tracker

        def use(error: Any, results: Any, late: bool = True) -> bool:
            if denied(error):
                self._refused(st, "repair", error)
                return not late
            if not_leader_epoch(error) is not None:
                return False  # asked a standby: the poller follows the leader; ask it again
            try:
                evs, gone, seq, bad = parse_events_reply(
                    error, results, first, last, self.cfg.markets,
                    self._check_accounts if st.kind == "balances" else None,
                )  # fmt: skip
            except Malformed as exc:
                self._malformed("reply", 1, f"repair reply of {st.name}: {exc}")
                return False
            if bad:
                self._malformed("reply", bad, f"{bad} malformed events from {st.name}")
            if gone is not None and denied(gone):
                self._refused(st, "repair", gone)  # our key, not the shard's journal
                return not late
            if gone is not None:
                if late:
                    return False  # decide on a fresh answer only
                n = tr.lose(first, last)
                if n:
                    LOST.labels(st.label).inc(n)
                    LAST.labels(st.label).set(tr.last)
                    self._alert(
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
                return True
            assert evs is not None
            if evs:
                REPAIRED.labels(st.label).inc(len(evs))
            tr.accept_repair(evs, None if late else seq)  # a late answer's seq is stale
            st.wake.set()
            return True

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
        st.repair_timeout = min(30.0, st.repair_timeout * 2)

    # -- Redis ----------------------------------------------------------------------------------

    async def _write(self, st: ShardState, batch: list[tuple]) -> None:
        """One script call for the batch (contiguous seqs starting at ``last + 1``)."""
        shard = st.index
        tr = st.tracker
        if st.kind == "balances":
            await self._write_balances(st, batch)
            return
        try:
            items = [self._item(ev, shard) for ev in batch]
        except Exception:  # an event the checks let through but formatting refused
            items = []
            for ev in batch:
                try:
                    items.append(self._item(ev, shard))
                except Exception as exc:
                    self._malformed("pub", 1, f"event {ev[1]} cannot be formatted: {exc!r}")
                    tr.putback([e for e in batch if e[1] > ev[1]])
                    batch = batch[: len(items)]
                    break
        if not batch:
            return
        tprefix = f"{self.cfg.prefix}trades:"
        keys = [self._events_key(shard), *{tprefix + it[2] for it in items if len(it) > 2}]
        args: tuple = (self._pack(items), tprefix, str(self.cfg.maxlen))
        if st.epoch:  # a replicated shard: written only under the newest epoch (WRITE_SCRIPT)
            keys.append(self._events_key(shard) + ":epoch")
            args += (str(st.epoch),)
        t0 = time.perf_counter()
        try:
            written, dups, trades, conflicts, newer = await self._eval(keys, args, st.label)
        except _TRANSIENT as exc:
            if not _transient(exc):
                if not isinstance(exc, ResponseError):
                    raise
                # a Redis refusal the script did not expect (OOM, read-only replica...):
                # the batch may be partly written; retry it whole after a pause (copies are
                # recognised as duplicates), never crash
                self._alert(shard, "redis", "redis", "Redis refused a write: %s",
                            self._scrub(str(exc)))  # fmt: skip
                tr.putback(batch)
                await asyncio.sleep(1.0)
                return
            await self._outage(exc)
            tr.putback([ev for ev in batch if ev[1] > tr.last])
            return
        XADD_TIME.observe(time.perf_counter() - t0)
        REDIS_UP.set(1)
        if newer:  # another writer already wrote a newer epoch: this batch is not trusted
            await self._newer_in_redis(st, batch, newer)
            return
        s = str(shard)
        WRITTEN.labels(s).inc(written)
        TRADES.labels(s).inc(trades)
        if dups:
            DUPS.labels(s).inc(dups)
        if conflicts:
            self._conflicts(st, conflicts)
        tr.written(batch[-1][1], time.monotonic())
        LAST.labels(s).set(tr.last)

    async def _write_balances(self, st: ShardState, batch: list[tuple]) -> None:
        """An account shard's batch (contiguous seqs): its balance and fee-ledger changes go to
        ``shardex:balances:<j>`` with ID ``<seq>-0`` (so Redis refuses a second copy, as for
        trades); its other events (forwards, refusals...) only advance the seq."""
        tr = st.tracker
        items = [self._balance_item(ev, st.index) for ev in batch if ev[0] in _BALANCE_KINDS]
        if items:
            keys = [self._stream_key(st)]
            args: tuple = (self._pack(items), f"{self.cfg.prefix}trades:", str(self.cfg.maxlen))
            if st.epoch:  # a replicated account shard: its own epoch key, as an engine shard's
                keys.append(self._stream_key(st) + ":epoch")
                args += (str(st.epoch),)
            t0 = time.perf_counter()
            try:
                written, dups, _, conflicts, newer = await self._eval(keys, args, st.label)
            except _TRANSIENT as exc:
                if not _transient(exc):
                    if not isinstance(exc, ResponseError):
                        raise
                    self._alert(st.label, "redis", "redis", "Redis refused a write: %s",
                                self._scrub(str(exc)))  # fmt: skip
                    tr.putback(batch)
                    await asyncio.sleep(1.0)
                    return
                await self._outage(exc)
                tr.putback([ev for ev in batch if ev[1] > tr.last])
                return
            XADD_TIME.observe(time.perf_counter() - t0)
            REDIS_UP.set(1)
            if newer:
                await self._newer_in_redis(st, batch, newer)
                return
            WRITTEN.labels(st.label).inc(written)
            if dups:
                DUPS.labels(st.label).inc(dups)
            if conflicts:
                self._conflicts(st, conflicts)
        tr.written(batch[-1][1], time.monotonic())
        LAST.labels(st.label).set(tr.last)

    async def _newer_in_redis(self, st: ShardState, batch: list[tuple], newer: int) -> None:
        """WRITE_SCRIPT wrote nothing: Redis holds entries of a newer epoch than the one this
        batch was received under (another bridge follows a newer leader). Count it, take the
        newer epoch, keep the batch for later (it is re-checked under the newer epoch; repairs
        from the new leader fill the rest) and follow that leader."""
        STALE_EPOCH.labels(st.label).inc()
        self._alert(st.label, "conflict", "stale epoch write",
                    "%s: Redis has entries of epoch %d, this bridge follows epoch %d: the "
                    "batch is not written; following the newer leader", st.name, newer,
                    st.epoch)  # fmt: skip
        st.epoch = max(st.epoch, newer)
        st.tracker.putback(batch)
        await self._follow_leader(st)
        await asyncio.sleep(0.2)

    def _balance_item(self, ev: tuple, shard: int) -> tuple:
        """An ``AE_BALANCE``/``AE_FEES`` event → (stream id, fields), amounts as exact decimal
        strings of the asset (``AssetTable.fmt``)."""
        fmt = self.assets.fmt
        if ev[0] == AE_BALANCE:
            _, seq, account, asset, avail, held, why, ref = ev
            fields = ["ev", "balance", "account", account, "asset", asset,
                      "available", fmt(asset, avail), "held", fmt(asset, held),
                      "why", why, "ref", ref]  # fmt: skip
        else:
            _, seq, asset, total = ev
            fields = ["ev", "fees", "asset", asset, "total", fmt(asset, total)]
        return (f"{seq}-0", [*fields, "seq", str(seq), "shard", str(shard)])

    def _conflicts(self, st: ShardState, flat: list) -> None:
        by_stream: dict[str, list[str]] = {}
        why: dict[str, str] = {}
        for k in range(0, len(flat) - 2, 3):
            key = _text(flat[k])
            by_stream.setdefault(key, []).append(_text(flat[k + 1]))
            why[key] = _text(flat[k + 2])
        for key, ids in by_stream.items():
            CONFLICTS.labels(st.label, key).inc(len(ids))
            st.tracker.conflicted += len(ids)
            self._alert(
                st.label,
                "conflict",
                f"conflict {key}",
                "%s: %d entries not stored in %s (ids %s..%s): %s; counted in "
                "shardex_bridge_conflicts_total",
                st.name,
                len(ids),
                key,
                ids[0],
                ids[-1],
                why[key],
            )

    def _item(self, ev: tuple, shard: int) -> tuple:
        if ev[0] != EV_TRADE:
            return (f"{ev[1]}-0", event_fields(ev, self.cfg.markets, shard))
        # Trades are the bulk: format them directly, with cached decimal strings (prices and
        # sizes repeat a lot, and Decimal formatting is the costliest step here).
        _, seq, symbol, price, qty, taker, maker, side, trade_id = ev
        cache = self._fmt
        p = cache.get((symbol, 0, price))
        if p is None:
            p = cache[(symbol, 0, price)] = self.cfg.markets[symbol].price_str(price)
        q = cache.get((symbol, 1, qty))
        if q is None:
            q = cache[(symbol, 1, qty)] = self.cfg.markets[symbol].qty_str(qty)
        if len(cache) > 200_000:
            cache.clear()
        tail = ["price", p, "qty", q, "taker", taker, "maker", maker,
                "taker_side", ("buy", "sell")[side], "trade_id", str(trade_id),
                "seq", str(seq), "shard", str(shard)]  # fmt: skip
        # the events stream entry is the trades stream entry plus what the stream key implies
        return (f"{seq}-0", ["ev", "trade", "symbol", symbol, *tail], symbol, tail)

    async def _outage(self, exc: Exception) -> None:
        """Wait until Redis answers again (one waiter for all shards), then re-sync ``last``."""
        async with self._outage_lock:
            delay = 0.1
            logged = False
            while True:
                try:
                    await self.redis.ping()
                    await self._sync_last()
                    break
                except _TRANSIENT as again:
                    # whatever Redis says (down, loading, wrong password, an ACL refusal, a
                    # wrong-type key): report once, retry with a pause, never crash
                    REDIS_UP.set(0)
                    if not logged:
                        self._redis_trouble(again if _transient(exc) else exc)
                        logged = True
                    await asyncio.sleep(delay)
                    delay = min(2.0, delay * 2)
            self.sha = None
            if logged:
                log.info(
                    "Redis is back; resuming at seqs %s",
                    [s.tracker.last for s in (*self.shards, *self.accounts)],
                )
            else:  # a call failed but Redis answered at once (e.g. restarted within ~0.1 s):
                # nothing is lost (last seqs re-read), but an outage must never go unseen
                self._alert("redis", "redis", "blip",
                            "a Redis call failed (%s) but %s answered again at once; resuming "
                            "at seqs %s", self._scrub(str(exc))[:200], self.redis_shown,
                            [s.tracker.last for s in self.shards])  # fmt: skip

    async def _eval(
        self, keys: list[str], args: tuple, label: str = "redis"
    ) -> tuple[int, int, int, list, int]:
        """(written, dups, trades, conflicts, newer epoch in Redis or 0) of one batch;
        ``label``: the shard an ALERT about its streams is counted for."""
        if self.sha is None:
            self.sha = await self.redis.script_load(WRITE_SCRIPT)
        try:
            res = await self.redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            self.sha = await self.redis.script_load(WRITE_SCRIPT)
            res = await self.redis.evalsha(self.sha, len(keys), *keys, *args)
        newer = int(res[4]) if len(res) > 4 else 0
        if len(res) > 5 and res[5]:
            self._trimmed(label, res[5])
        return int(res[0]), int(res[1]), int(res[2]), res[3], newer

    def _trimmed(self, label: str, flat: list) -> None:
        """ALERT once per stream and count: entries vanished from a stream the bridge never
        trims (a holder of write access ran XADD MAXLEN/MINID, XTRIM or XDEL)."""
        for k in range(0, len(flat) - 1, 2):
            key, gone = _text(flat[k]), int(flat[k + 1])
            if self._deleted.get(key) != gone:
                self._deleted[key] = gone
                self._alert(label, "conflict", f"deleted {key}",
                            "%d entries were deleted from %s although this bridge never trims "
                            "it (no --maxlen): someone with write access to Redis trimmed it "
                            "(XADD MAXLEN/MINID, XTRIM, XDEL); readers miss them, the shard's "
                            "journal still has them", gone, key)  # fmt: skip

    async def _until_redis(self, call):
        while True:
            try:
                return await call()
            except _TRANSIENT as exc:
                if not _transient(exc):
                    # Redis answers but refuses this (ACL, wrong type): say so, pace the retry
                    self._redis_trouble(exc)
                    await asyncio.sleep(1.0)
                await self._outage(exc)

    def _redis_trouble(self, exc: Exception) -> None:
        """One ALERT line saying what Redis refused, with the URL's password masked."""
        why = self._scrub(str(exc))
        if isinstance(exc, RedisAuthenticationError):
            self._alert("redis", "redis", "auth",
                        "Redis %s refused the bridge's credentials (%s): check the user and "
                        "password (KEYS_DIR/redis.json for the embedded server); retrying",
                        self.redis_shown, why)  # fmt: skip
        elif isinstance(exc, NoPermissionError):
            self._alert("redis", "redis", "acl",
                        "Redis %s denies the bridge a command or key (ACL): %s; the bridge "
                        "user needs its rules (docs/redis.md, Redis >= 7.0) on %s* keys; "
                        "retrying", self.redis_shown, why, self.cfg.prefix)  # fmt: skip
        elif isinstance(exc, ResponseError) and not _transient(exc):
            self._alert("redis", "redis", "refused", "Redis %s refused a command: %s; retrying",
                        self.redis_shown, why)  # fmt: skip
        else:
            REDIS_UP.set(0)
            log.error("Redis unavailable at %s (%s); retrying", self.redis_shown, why)

    def _scrub(self, text: str) -> str:
        """``text`` without the Redis password, should any library ever echo it."""
        return text.replace(self._password, "***") if self._password else text


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def _account_topology(frames: list[bytes]) -> list[dict[str, Any]] | None:
    """The router's account shards (issue 14) → each one's PUB and direct endpoints and leader
    epoch (0: not replicated); ``[]`` when the account tier is off, None until every account
    shard has registered."""
    try:
        info = parse_topology(*decode_reply(frames[1]))
    except (TopologyError, Exception):
        return None
    topo = info.get("account_topology") or []
    if not isinstance(topo, list | tuple) or len(topo) != (info.get("accounts") or 0):
        return None
    out = []
    for t in topo:
        if not isinstance(t, dict):
            return None
        pub, direct = t.get("pub"), t.get("direct")
        if type(pub) is not str or type(direct) is not str or not pub or not direct:
            return None
        epoch = t.get("epoch")  # a replicated account shard's leader epoch (issue 15)
        out.append({"pub": pub, "direct": direct, "epoch": epoch if type(epoch) is int else 0})
    return out


def _waiting_for(frames: list[bytes]) -> tuple[tuple[str, ...], str]:
    """From a router's topology reply: the shards not registered yet (names) and, for those
    replaying their journal, the router's recovering estimate (text)."""
    try:
        info = parse_topology(*decode_reply(frames[1]))
    except Exception:
        return ("a valid topology from the router",), ""
    names = [f"shard {i}" for i, t in enumerate(info.get("topology") or ())
             if not (isinstance(t, dict) and t.get("pub") and t.get("direct"))]  # fmt: skip
    names += [f"account shard {j}" for j, t in enumerate(info.get("account_topology") or ())
              if not (isinstance(t, dict) and t.get("pub") and t.get("direct"))]  # fmt: skip
    recovering = info.get("recovering")
    detail = ""
    if isinstance(recovering, dict) and recovering:
        detail = " (recovering: " + "; ".join(describe_recovery(v) for v in
                                              recovering.values()) + ")"  # fmt: skip
    return tuple(names) or ("every shard",), detail


def _topology(frames: list[bytes]) -> list[dict[str, Any]] | None:
    """The router's topology reply → every shard's endpoints, or None if incomplete/garbage."""
    if len(frames) != 2:
        return None
    try:
        topo = parse_topology(*decode_reply(frames[1]))["topology"]
        out = []
        for t in topo:
            pub, direct = t.get("pub"), t.get("direct")
            if type(pub) is not str or type(direct) is not str or not pub or not direct:
                return None
            epoch = t.get("epoch")  # a replicated shard's leader epoch (issue 15), else None
            out.append({"pub": pub, "direct": direct, "epoch": epoch if type(epoch) is int else 0})
        return out
    except TopologyError:
        return None


_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError, ResponseError)


def _transient(exc: Exception) -> bool:
    """Connection trouble, or a server that is still loading its AOF after a restart."""
    if isinstance(exc, ResponseError):
        return "LOADING" in str(exc) or "MASTERDOWN" in str(exc)
    return True


def run_bridge(cfg: BridgeConfig) -> None:
    import uvloop

    serve(cfg.metrics_port, "bridge")

    async def main() -> None:
        bridge = Bridge(cfg)
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop() -> None:
            # Cancel whatever the bridge awaits (a Redis retry loop, the topology wait, a
            # write): a flag alone is not seen by a loop waiting for Redis to come back, and
            # the process then outlived its supervisor's grace period, metrics port and all.
            if bridge.running:
                bridge.running = False
                task.cancel()

        loop.add_signal_handler(signal.SIGTERM, stop)
        loop.add_signal_handler(signal.SIGINT, stop)
        try:
            await bridge.run()
        except asyncio.CancelledError:
            if bridge.running:
                raise  # not our stop: let it propagate

    log.info("bridge starting (pid %d)", os.getpid())
    try:
        uvloop.run(main())
    except (AuthError, RedisAuthError) as exc:
        log.error("bridge cannot start: %s", exc)  # a configuration error, one line
        raise SystemExit(2) from None
    log.info("bridge stopped")

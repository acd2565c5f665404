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

Structure (one concern per module of this package):

* ``shardex.wire.pub``: the PUB decoder (``decode_pub``, ``check_event``...): whatever a peer
  sends (any msgpack value in any position), good events or ``Malformed``; ``replies``: the
  same for a shard's answers (``parse_status``, ``parse_events_reply``, ``not_leader``).
* ``tracker``: ``ShardTracker``, the socket-free, clock-free core of one shard (what to write
  next, which range to repair, what is lost, when the shard is stalled, when Redis is ahead).
* ``links``: a shard's DEALER (``ShardLink``), CURVE handshake watches, ``ShardState``.
* ``topology``: the router's topology; ``status``: status polls and leader following;
  ``pump``: each shard's writer task and gap repair.
* ``redis_writer`` (with the Lua of ``script``) and ``entries``: Redis writes and their
  formatting; ``metrics``: counters and the rate-limited ALERT lines.
* ``serve``: ``Bridge``, the asyncio loop wiring them, and ``run_bridge``.

The loop counts malformed input in ``shardex_bridge_malformed_total{source}`` and goes on. No
task ever dies of input.

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

Replicated shards (engine shards and account shards alike): a leader's PUB messages
carry its epoch (a 4th field) and its HELLO to the router carries it too. The bridge keeps the
newest epoch seen per shard: a PUB message of an older epoch (a deposed leader's) is dropped
and counted (``shardex_bridge_stale_epoch_total{shard}``, a ``conflict`` ALERT); each write
carries that epoch to WRITE_SCRIPT, which refuses it if ``<stream key>:epoch`` holds a newer
one (``shardex:events:I:epoch``, ``shardex:balances:J:epoch``). A shard that stops answering,
or answers ``not_leader`` (a standby now holds that endpoint), is looked up in the router's
topology and, once a newer epoch registered elsewhere, its SUB and DEALER move there
(``status.Follower``); the new leader serves the same journal, so seqs continue and whatever
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

from shardex.node.bridge.config import PREFIX, BridgeConfig
from shardex.node.bridge.entries import EntryFormatter, event_fields
from shardex.node.bridge.links import (
    STARTUP_GRACE_S,
    Handshakes,
    ShardLink,
    ShardState,
    still_starting,
)
from shardex.node.bridge.metrics import ALERT_KINDS, ALERTS, Alerts
from shardex.node.bridge.redis_writer import RedisWriter
from shardex.node.bridge.replies import denied, not_leader, parse_events_reply, parse_status
from shardex.node.bridge.script import WRITE_SCRIPT
from shardex.node.bridge.serve import Bridge, run_bridge
from shardex.node.bridge.topology import _account_topology, _topology, _waiting_for
from shardex.node.bridge.tracker import ShardTracker, StatusOutcome
from shardex.wire.pub import (
    MAX_SEQ,
    MAX_STR,
    Malformed,
    check_account_event,
    check_account_events,
    check_event,
    check_events,
    decode_account_pub,
    decode_account_pub_epoch,
    decode_pub,
    decode_pub_epoch,
)

__all__ = [
    "ALERTS",
    "ALERT_KINDS",
    "MAX_SEQ",
    "MAX_STR",
    "PREFIX",
    "STARTUP_GRACE_S",
    "WRITE_SCRIPT",
    "Alerts",
    "Bridge",
    "BridgeConfig",
    "EntryFormatter",
    "Handshakes",
    "Malformed",
    "RedisWriter",
    "ShardLink",
    "ShardState",
    "ShardTracker",
    "StatusOutcome",
    "_account_topology",
    "_topology",
    "_waiting_for",
    "check_account_event",
    "check_account_events",
    "check_event",
    "check_events",
    "decode_account_pub",
    "decode_account_pub_epoch",
    "decode_pub",
    "decode_pub_epoch",
    "denied",
    "event_fields",
    "not_leader",
    "parse_events_reply",
    "parse_status",
    "run_bridge",
    "still_starting",
]

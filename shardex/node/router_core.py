"""The router's core: every routing decision and counter, without sockets.

``Router`` takes frames and returns frames: which shard a request goes to (the placement
map's owner of its routing key: the newest map a shard's HELLO carried), whether it is
admitted or shed (per-shard and per-client in-flight caps), which client a shard's reply
belongs to, and which link serves each slot (shards' HELLOs). The loop that moves the frames
is ``RouterNode`` (``router.py``); tests drive this class directly.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from typing import Any

from shardex.auth import Registry
from shardex.clock import REAL, Clock
from shardex.engine.codes import MAX_ID_LEN
from shardex.metrics import LATENCY_BUCKETS, SIZE_BUCKETS, Hist
from shardex.node.router_hello import HelloChecks
from shardex.node.router_report import RECOVERING_TTL_S, RouterReports, _slot_name
from shardex.node.router_resize import resizable, resize
from shardex.node.sojourn import INTERVAL_S, TARGET_S, Codel, ServiceRate, rate_cap
from shardex.placement.core import PlacementMap, initial
from shardex.recovery import describe
from shardex.wire import codes
from shardex.wire.protocol import (
    ACCOUNT_ROUTE,
    ACCOUNT_SHARD_ROUTE,
    BATCH,
    BATCH_REPLY_WIDTH,
    ERR_MALFORMED_MESSAGE,
    ERR_OVERLOADED,
    ERR_RECOVERING,
    ERR_UNAVAILABLE,
    ERR_UNKNOWN_KEY,
    MAX_BATCH,
    MAX_BATCH_BYTES,
    MAX_FRAME,
    MAX_SYMBOL_LEN,
    NOT_LEADER,
    decode_batch,
    encode_reply,
    error,
    leader_changed_error,
    recovering_error,
)

__all__ = ["RECOVERING_TTL_S", "Router", "RouterConfig"]

SKIPPED_AFTER_S = 0.1  # unanswered though forwarded this long before one answered: skipped

log = logging.getLogger("shardex.router")


@dataclass
class RouterConfig:
    shards: int
    frontend: str  # bind: clients connect here
    backend: str  # bind: shards connect here
    hwm: int = 10_000  # per-pipe high-water mark toward each shard (messages)
    metrics_port: int | None = None
    # Load shedding: past these, a request gets an immediate ``overloaded`` instead of a queue
    # (a short queue in front of each shard is what keeps the p99 of accepted orders bounded).
    max_inflight: int = 1_000  # requests forwarded to one shard and not yet answered
    # ... and fewer while the shard is measured slower: what it serves in ``queue_cap_s`` at
    # its measured rate, at least ``min_inflight`` (``sojourn.rate_cap``; 0: the count alone)
    queue_cap_s: float = 0.0  # (off unless asked: --queue-cap-ms; QUEUE_CAP_S measured)
    min_inflight: int = 250
    max_inflight_bytes: int = 8 << 20  # their payload bytes
    # requests of one client connection not yet answered: a quarter of a shard's queue, so one
    # client alone cannot fill it and starve the others
    client_max_inflight: int = 250
    # Shedding by time queued (``sojourn``, per shard): once the wait a new request would have
    # at a shard (its queue over its measured service rate) stayed above ``shed_target`` s for
    # a whole ``shed_interval``, one that would wait more than ``shed_limit`` s is answered
    # ``overloaded`` (0, the default: off; ``LIMIT_S`` is the value docs/overload.md advises
    # where the cluster has its cores to itself and clients pipeline little)
    shed_target: float = TARGET_S
    shed_interval: float = INTERVAL_S
    shed_limit: float = 0.0
    # replies queued toward one client before they are dropped (counted): with the shards'
    # routed reply budget (64 KiB) this bounds what a client that never reads can pin here
    client_hwm: int = 1_000
    inflight_timeout: float = 30.0  # forget a request a dead shard will never answer
    open_after: float = 3.0  # bind the client endpoint by then even if shards are missing
    # CURVE + ZAP on both sockets from this key store (``shardex.auth``); None: insecure (lab)
    keys_dir: str | None = None
    # Account shards: M > 0 routes ``@<account>`` keys (new, amend, transfers,
    # balance) to account shard crc32(account) % M and ``%<j>`` to account shard j; they
    # register on the backend like engine shards and take slots N..N+M-1. 0: off.
    accounts: int = 0


_MALFORMED = encode_reply(None, ERR_MALFORMED_MESSAGE)
_TOO_LARGE = encode_reply(None, error(codes.FRAME_TOO_LARGE, f"frame too large (max {MAX_FRAME} "
                                      "bytes)", max=MAX_FRAME))  # fmt: skip
_BAD_KEY = encode_reply(None, error(codes.UNKNOWN_ROUTE, "unknown routing key"))
_UNAVAILABLE = encode_reply(None, ERR_UNAVAILABLE)
_OVERLOADED = encode_reply(None, ERR_OVERLOADED)
_UNKNOWN_KEY = encode_reply(None, ERR_UNKNOWN_KEY)


class Router(HelloChecks, RouterReports):
    """All routing decisions and counters, without sockets (the loop in ``RouterNode`` moves
    frames; tests drive this class directly).

    Requests are tracked from forward to reply, per shard and per client, so that a shard's
    queue and one client's share of it stay bounded: that is where load is shed.
    """

    def __init__(
        self, shards: int, cfg: RouterConfig | None = None, registry: Registry | None = None,
        clock: Clock = REAL,
    ) -> None:  # fmt: skip
        """``clock``: the node's (``shardex.clock``); the decisions take ``now`` from their
        caller (its ``perf_counter``), the reports (``RouterReports``) read the same one."""
        if shards < 1:
            raise ValueError("need at least one shard")
        self.clock = clock
        self.cfg = cfg or RouterConfig(shards, "", "")
        # With a registry every message must come from a live key (checked per message, so a
        # revoked key is cut off on connections it already has); None: insecure mode.
        self.registry = registry
        self.shards = shards
        self.accounts = self.cfg.accounts
        slots = self.slots = shards + self.accounts  # engine shards, then account shards
        self.identities = [f"shard-{i}".encode() for i in range(shards)] + [
            f"accounts-{j}".encode() for j in range(self.accounts)
        ]
        # Where shard i's requests go: its connection's routing id. Insecure: the id the shard
        # names itself (``shard-i``). Secure: learned only from a HELLO signed by shard i's own
        # key, so nobody can take a shard's traffic by choosing its name (ROUTER_HANDOVER).
        secure = registry is not None
        self.route_ids: list[bytes | None] = [None] * slots if secure else list(self.identities)
        self.shard_of: dict[bytes, int] = (
            {} if secure else {ident: i for i, ident in enumerate(self.identities)}
        )
        self._route: dict[bytes, int] = {}  # routing key → shard, under ``placement``
        self.placement: PlacementMap = initial(shards)
        self.topology: dict[int, dict[str, Any]] = {}
        # Replicated shards: the highest leader epoch seen per slot; a HELLO of an
        # older epoch (a deposed leader) is ignored, so its connection is never routed to.
        self.epochs: dict[int, int] = {}
        self.stale_epochs: set[tuple[int, int]] = set()
        # A leader link that said NOT_LEADER (past its lease deadline): no longer routed to;
        # its replies still count as its slot's until another link registers for the slot.
        self.fenced: dict[int, bytes] = {}
        # replies the last hello produced (``_leader_changed``), for ``from_shard`` to return
        self.orphans: list[list[bytes]] = []
        self.last_seen: dict[int, float] = {}
        # slots whose process is replaying its journal: (its estimate, when it said so); see
        # ``shardex.recovery``. Requests for them are answered ``recovering`` meanwhile.
        self.recovering: dict[int, tuple[Any, float]] = {}
        self._init_flow(slots)

    def _init_flow(self, slots: int) -> None:
        """The per-request state and counters (``__init__``'s second half): what is in flight
        per shard and client, the batches being filled, and what was forwarded or shed."""
        self.forwarded = [0] * slots
        self.rejected = {
            ERR_OVERLOADED: 0,
            ERR_UNAVAILABLE: 0,
            ERR_RECOVERING: 0,
            "malformed": 0,
            "bad_key": 0,
            "unauthenticated": 0,
            "leader_changed": 0,  # in flight to a deposed leader: answered "may have run"
        }
        self.foreign_replies = 0  # replies from a connection that is not the request's shard
        self.malformed_from_shards = 0  # messages on the backend that are no hello or batch
        self.replies_dropped = {"client_slow": 0, "client_gone": 0}
        # order→ack as the router sees it: (shard, forward time, bytes) of each request
        self.inflight: dict[tuple[bytes, bytes], tuple[int, float, int]] = {}
        self.shard_inflight = [0] * slots
        self.shard_bytes = [0] * slots
        self.client_inflight: dict[bytes, int] = {}
        cfg = self.cfg
        self.codel = [Codel(cfg.shed_target, cfg.shed_interval, cfg.shed_limit)
                      for _ in range(slots)]  # fmt: skip
        self.rates = [ServiceRate(cfg.shed_interval) for _ in range(slots)]
        # per shard: its in-flight cap at its measured rate (``rate_cap``; the count cap
        # until measured), re-derived when it answers
        self.caps = [cfg.max_inflight] * slots
        self.served = [0.0] * slots  # per shard: forward time of the newest request answered
        self.skipped = [0] * slots  # per shard: requests it will never answer (``expire``)
        # the router's own queue: its client socket, invisible to the loop. What it holds
        # arrived after the loop last found it empty (``drained_at``, kept by the loop), so
        # ``now`` minus that bounds how long the request being read has waited there; the same
        # rule sheds by it (None: no loop tells, as when a test drives this class)
        self.front_codel = Codel(cfg.shed_target, cfg.shed_interval, cfg.shed_limit)
        self.drained_at: float | None = None
        self.ack_time = [Hist(LATENCY_BUCKETS) for _ in range(slots)]
        # requests admitted in this wake-up and not yet sent, per shard (flat frames), and the
        # shards that have any, in the order they got their first
        self.batches: list[list[bytes]] = [[] for _ in range(slots)]
        self.batch_bytes = [0] * slots
        self.ready: list[int] = []
        self.batch_size = Hist(SIZE_BUCKETS)  # requests per message sent to a shard

    # -- decisions --------------------------------------------------------------------------------

    def from_client(
        self, frames: list[bytes], now: float, user: str | None = None
    ) -> tuple[int, list[bytes] | None]:
        """A client's message → ``(-1, the client's immediate reply)``, or ``(shard, None)``:
        admitted, tracked in flight from now and queued in that shard's batch (``take_batch``).

        ``user`` is the connection's authenticated key id (ZAP ``User-Id``); it travels to the
        shard in a field of its own that no client can write.
        """
        client = frames[0]
        if len(frames) != 4:
            self.rejected["malformed"] += 1
            return -1, [client, frames[2] if len(frames) > 2 else b"", _MALFORMED]
        key, req, payload = frames[1], frames[2], frames[3]
        if self.registry is not None and self.registry.lookup(user) is None:
            self.rejected["unauthenticated"] += 1
            return -1, [client, req, _UNKNOWN_KEY]
        if not key:
            return -1, [client, req, encode_reply([self.info(now)])]
        if self._front_late(client, now):
            self.rejected[ERR_OVERLOADED] += 1
            return -1, [client, req, _OVERLOADED]
        size = len(payload)
        if size > MAX_FRAME:
            self.rejected["malformed"] += 1
            return -1, [client, req, _TOO_LARGE]
        shard = self.shard_index_for(key)
        if shard is None:
            self.rejected["bad_key"] += 1
            return -1, [client, req, _BAD_KEY]
        if self.recovering and shard in self.recovering:
            reply = self.recovering_reply(shard, now)
            if reply is not None:  # replaying its journal: say so, with its estimate
                self.rejected[ERR_RECOVERING] += 1
                return -1, [client, req, reply]
        if self.route_ids[shard] is None:  # not registered (yet): nobody to send it to
            self.rejected[ERR_UNAVAILABLE] += 1
            return -1, [client, req, _UNAVAILABLE]
        late = self._late(shard, client, now)
        cfg = self.cfg
        if (
            late  # (counted in ``codel[shard].shed`` too)
            or self.shard_inflight[shard] >= cfg.max_inflight
            or self._capped(shard, client)
            or self.shard_bytes[shard] + size > cfg.max_inflight_bytes
            or self.client_inflight.get(client, 0) >= cfg.client_max_inflight
        ):
            self.rejected[ERR_OVERLOADED] += 1
            return -1, [client, req, _OVERLOADED]
        self._admit(shard, client, req, (user or "").encode(), payload, now)
        return shard, None

    def _admit(
        self, shard: int, client: bytes, req: bytes, user: bytes, payload: bytes, now: float
    ) -> None:
        """Counted against the caps now, so one wake-up cannot overshoot them; queued in
        ``shard``'s batch."""
        k = (client, req)
        old = self.inflight.get(k)
        if old is not None:  # a client reusing a request id: count it once
            self._forget(k, old)
        size = len(payload)
        self.inflight[k] = (shard, now, size)
        self.shard_inflight[shard] += 1
        self.shard_bytes[shard] += size
        self.client_inflight[client] = self.client_inflight.get(client, 0) + 1
        self.batches[shard].extend((client, req, user, payload))
        self.batch_bytes[shard] += size
        if shard not in self.ready:
            self.ready.append(shard)

    def _capped(self, shard: int, client: bytes) -> bool:
        """Whether ``shard`` holds its rate-derived cap (``rate_cap``) of requests it will
        answer, for a client with requests in flight: one that waits for each answer (a lone
        trader, a status read) still gets through a queue another client filled."""
        queued = self.shard_inflight[shard] - self.skipped[shard]
        return queued >= self.caps[shard] and client in self.client_inflight

    def _front_late(self, client: bytes, now: float) -> bool:
        """Shedding by the wait in the router's own client socket: read late (``now`` minus
        when the loop last found it empty) from a client with requests waiting."""
        drained = self.drained_at
        if (
            drained is not None
            and self.front_codel.observe(now - drained, now)
            and client in self.client_inflight
        ):
            self.front_codel.shed += 1
            return True
        return False

    def _late(self, shard: int, client: bytes, now: float) -> bool:
        """Whether shedding by time refuses this request (``sojourn``): every arrival is
        measured, also one a count cap will refuse (a queue at its cap is no quiet one).

        The wait it would have at the shard: its queue over its measured service rate (a burst
        read in one wake-up counts whole); requests the shard skipped (``expire`` counts
        them) are no queue. A client with nothing in flight is never refused by time: one that
        waits for each answer cannot make a queue stand, and so a lone trader, or a status
        read, still gets through a flood of others."""
        queued = self.shard_inflight[shard] - self.skipped[shard]
        if queued <= 0:  # an empty queue: no wait, and the shard is busy from now on
            self.codel[shard].observe(0.0, now)
            self.rates[shard].started(now)
            self.served[shard] = now
            return False
        codel = self.codel[shard]
        if codel.observe(self.rates[shard].wait(queued), now) and client in self.client_inflight:
            codel.shed += 1
            return True
        return False

    def batch_full(self, shard: int) -> bool:
        return (
            len(self.batches[shard]) >= MAX_BATCH * 4 or self.batch_bytes[shard] >= MAX_BATCH_BYTES
        )

    def take_batch(self, shard: int) -> tuple[bytes | None, list[bytes]]:
        """Shard ``shard``'s queued requests (flat: client, request id, key id, payload, ...) and
        the link to send them on (None if the shard is gone); the queue starts empty again."""
        items = self.batches[shard]
        self.batches[shard] = []
        self.batch_bytes[shard] = 0
        if items:
            self.forwarded[shard] += len(items) // 4
            self.batch_size.add(len(items) // 4)
        return self.route_ids[shard], items

    def batch_failed(self, shard: int, items: list[bytes], unreachable: bool) -> list[list[bytes]]:
        """The backend refused a batch: each of its requests gets its client's immediate reject
        and stops counting against the caps."""
        reason = ERR_UNAVAILABLE if unreachable else ERR_OVERLOADED
        reply = _UNAVAILABLE if unreachable else _OVERLOADED
        out = []
        self.forwarded[shard] -= len(items) // 4
        for i in range(0, len(items), 4):
            k = (items[i], items[i + 1])
            entry = self.inflight.get(k)
            if entry is not None:
                self._forget(k, entry)
            self.rejected[reason] += 1
            out.append([items[i], items[i + 1], reply])
        return out

    def from_shard(
        self, frames: list[bytes], now: float, user: str | None = None
    ) -> list[list[bytes]]:
        """A shard's message → the replies to send to clients (none for a hello or garbage)."""
        # [shard link, "", BATCH, msgpack [client, request id, reply, ...]] or a hello
        if len(frames) != 4 or frames[1]:
            self.malformed_from_shards += 1
            return []
        if frames[2] == b"HELLO":
            self.hello(frames[0], frames[3], now, user)
            orphans, self.orphans = self.orphans, []
            return orphans
        if frames[2] == NOT_LEADER:
            self.not_leader(frames[0])
            return []
        shard = self.shard_of.get(frames[0])
        items = decode_batch(frames[3], BATCH_REPLY_WIDTH) if frames[2] == BATCH else None
        if items is None:
            self.malformed_from_shards += 1
            return []
        inflight = self.inflight
        hist = self.ack_time
        answered = 0
        served = self.served
        out = []
        for i in range(0, len(items), 3):
            k = (items[i], items[i + 1])
            entry = inflight.get(k)
            if shard is None or (entry is not None and entry[0] != shard):
                self.foreign_replies += 1  # not from the shard that holds this request: drop it
                continue
            if entry is not None:
                del inflight[k]
                self._forget(k, entry, popped=True)
                sent = entry[1]
                hist[shard].add(now - sent)
                if sent > served[shard]:
                    served[shard] = sent
                answered += 1
            out.append([items[i], items[i + 1], items[i + 2]])
        if answered:
            rate = self.rates[shard]
            rate.answered(answered, now, self.shard_inflight[shard] > 0)
            cfg = self.cfg
            self.caps[shard] = rate_cap(rate.rate, cfg.queue_cap_s, cfg.min_inflight,
                                        cfg.max_inflight)  # fmt: skip
        return out

    def reply_dropped(self, gone: bool) -> None:
        self.replies_dropped["client_gone" if gone else "client_slow"] += 1

    def _forget(
        self, key: tuple[bytes, bytes], entry: tuple[int, float, int], popped: bool = False
    ) -> None:
        if not popped:
            del self.inflight[key]
        shard, _, size = entry
        self.shard_inflight[shard] -= 1
        self.shard_bytes[shard] -= size
        client = key[0]
        n = self.client_inflight.get(client, 0) - 1
        if n > 0:
            self.client_inflight[client] = n
        else:
            self.client_inflight.pop(client, None)

    def expire(self, now: float, older_than: float | None = None) -> int:
        """Forget requests a dead shard will never answer (bounded memory, caps freed)."""
        limit = self.cfg.inflight_timeout if older_than is None else older_than
        stale = [(k, e) for k, e in self.inflight.items() if now - e[1] > limit]
        for k, e in stale:
            self._forget(k, e)
        # (the same pass:) requests a shard skipped, forwarded before the newest it answered
        # (it serves in order), wait nowhere: shedding by time does not count them as queue
        skipped = self.skipped = [0] * self.slots
        served = self.served
        for shard, sent, _ in self.inflight.values():
            if sent < served[shard] - SKIPPED_AFTER_S:
                skipped[shard] += 1
        return len(stale)

    def _leader_changed(self, shard: int, now: float, epoch: int) -> list[list[bytes]]:
        """A newer epoch's leader registered: the deposed leader will never answer what it
        was sent (it is dead, or fenced: it can acknowledge nothing any more). Each such
        request gets an answer now instead of its client's timeout, and the answer says the
        truth: it may have run (the new leader holds everything the old one acknowledged, and
        maybe more), so the client must ask its fate before sending it again (code
        ``leader_changed``, uncertain)."""
        out = []
        for k, e in [(k, e) for k, e in self.inflight.items() if e[0] == shard]:
            self._forget(k, e)
            error = leader_changed_error(max(0.0, now - e[1]), shard, epoch)
            out.append([k[0], k[1], encode_reply(None, error)])
        self.rejected["leader_changed"] += len(out)
        return out

    def _shard_restarted(self, shard: int) -> None:
        """A new process took over ``shard``: what the old one held will never be answered."""
        for k, e in [(k, e) for k, e in self.inflight.items() if e[0] == shard]:
            self._forget(k, e)

    def shard_index_for(self, key: bytes) -> int | None:
        """The shard a routing key names: a symbol (hashed), ``#i``, or None if neither."""
        shard = self._route.get(key)
        if shard is None:
            if self.accounts and key[:1] in (ACCOUNT_ROUTE, ACCOUNT_SHARD_ROUTE):
                return self._account_slot(key)
            if len(key) > MAX_SYMBOL_LEN:
                return None  # no symbol is this long; never cache client-chosen big keys
            if key[:1] == b"#":
                try:
                    i = int(key[1:])
                except ValueError:
                    return None
                return i if 0 <= i < self.shards else None
            shard = self.placement.owner(key)
            if len(self._route) < 100_000:
                self._route[key] = shard
        return shard

    def _account_slot(self, key: bytes) -> int | None:
        """``@<account>`` → its account shard's slot; ``%<j>`` → account shard j's slot."""
        rest = key[1:]
        if key[:1] == ACCOUNT_ROUTE:
            if not 0 < len(rest) <= MAX_ID_LEN:
                return None
            return self.shards + zlib.crc32(rest) % self.accounts
        try:
            j = int(rest) if len(rest) <= 3 else -1
        except ValueError:
            return None
        return self.shards + j if 0 <= j < self.accounts else None

    def not_leader(self, sender: bytes) -> None:
        """The link we route a slot to says it no longer leads (a replicated leader past its
        lease deadline): stop routing there, so requests get ``shard unavailable`` at once
        (retryable, nothing ran) instead of a refusal round trip or a timeout, until a leader
        registers: the next epoch's, or this one again if its lease comes back (its hello).
        A NOT_LEADER from any other connection changes nothing."""
        i = self.shard_of.get(sender)
        if i is None or self.route_ids[i] != sender:
            return
        log.error("ALERT %s: its leader link %r says it is not leader any more; answering "
                  "shard unavailable until a leader registers", _slot_name(i, self.shards),
                  sender[:32])  # fmt: skip
        self.route_ids[i] = None
        self.fenced[i] = sender

    def hello(self, sender: bytes, payload: bytes, now: float, user: str | None = None) -> None:
        """A shard's HELLO (its registration, repeated as a heartbeat).

        Ignored, with a log line, unless it names a slot of this router, its epoch is not
        older than the slot's leader's, and it comes from the link (insecure) or the key
        (secure) that slot allows. A recovery beacon's hello marks the slot recovering; any
        other makes ``sender`` the slot's route (``_register``).
        """
        slot = self._hello_slot(sender, payload)
        if slot is None:
            return
        i, j, role, info = slot
        epoch = info.get("epoch")
        if not self._hello_epoch_ok(i, epoch, info):
            return
        recovering = info.get("recovering")
        if not self._hello_sender_ok(i, j, role, epoch, recovering is not None, sender, user):
            return
        if recovering is not None:
            if i not in self.recovering:
                log.warning("%s is recovering (pid %s): answering 'recovering' until it "
                            "registers", _slot_name(i, self.shards), info.get("pid"))  # fmt: skip
            self.recovering[i] = (recovering, now)
            return
        if self.recovering.pop(i, None) is not None:
            log.info("%s recovered", _slot_name(i, self.shards))
        if i < self.shards and "placement" in info:
            self.learn_placement(info["placement"], i)
        self._register(i, sender, info, epoch, now)

    def learn_placement(self, wire: Any, slot: int) -> bool:
        """A shard's map (its HELLO's ``placement``): routed by from now on if it is newer than
        the one held (the route cache starts empty again); an older or malformed one is ignored.
        True when it was taken."""
        try:
            new = PlacementMap.from_wire(wire)
        except ValueError as exc:
            log.warning("ignoring shard %d's placement map: %s", slot, exc)
            return False
        if new.version <= self.placement.version:
            return False
        if new.shards != self.shards:
            if not resizable(self):
                return False
            log.warning("engine shards: %d -> %d (placement map v%d)", self.shards, new.shards,
                        new.version)  # fmt: skip
            resize(self, new.shards)
        log.info("placement map v%d (from shard %d; was v%d)", new.version, slot,
                 self.placement.version)  # fmt: skip
        self.placement = new
        self._route.clear()
        return True

    def _register(
        self, i: int, sender: bytes, info: dict[str, Any], epoch: int | None, now: float
    ) -> None:
        """An admitted hello: ``sender`` serves slot ``i`` from now on (a newer epoch takes the
        lead; a new process or link answers what the old one will never answer)."""
        deposed = self.epochs.get(i, 0)  # the epoch this hello may take over from (0: none)
        if epoch is not None and epoch > deposed:
            log.warning("%s: leader epoch %d (pid %s)", _slot_name(i, self.shards), epoch,
                        info.get("pid"))  # fmt: skip
            self.epochs[i] = epoch
        old = self.topology.get(i)
        moved = self.route_ids[i] != sender
        if moved:  # (secure mode) this connection now serves shard i
            self.shard_of.pop(self.route_ids[i], None)  # type: ignore[arg-type]
            fenced = self.fenced.pop(i, None)
            if fenced is not None and fenced != sender:
                self.shard_of.pop(fenced, None)
            self.route_ids[i] = sender
            self.shard_of[sender] = i
        if old is None or old.get("pid") != info.get("pid") or moved:
            if old is not None and epoch is not None and deposed and epoch > deposed:
                self.orphans += self._leader_changed(i, now, epoch)
            elif old is not None:
                self._shard_restarted(i)
            log.info(
                "%s registered (pid %s, direct %s, pub %s)",
                f"shard {i}" if i < self.shards else f"account shard {i - self.shards}",
                info.get("pid"),
                info.get("direct"),
                info.get("pub"),
            )
        self.topology[i] = {k: v for k, v in info.items() if k != "placement"}  # (``info``)
        self.last_seen[i] = now

    def recovering_reply(self, slot: int, now: float) -> bytes | None:
        """The ``recovering`` batch error for ``slot`` (its estimate in the text), or None when
        its last recovering hello is older than ``RECOVERING_TTL_S`` (the process died)."""
        state, seen = self.recovering[slot]
        if now - seen > RECOVERING_TTL_S:
            del self.recovering[slot]
            return None
        return encode_reply(
            None,
            recovering_error(
                _slot_name(slot, self.shards), state, f"replaying its journal ({describe(state)})"
            ),
        )

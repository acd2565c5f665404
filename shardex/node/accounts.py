"""Account shard process (issue 14): balances and holds of the accounts with crc32 % M == J.

``AccountHandler`` is the socket-free part (decode a client request, check the key, turn it into
``AccountCore`` commands, build the reply); ``AccountNode`` is the thin loop around it, shaped
like the engine shard's ``ShardNode``: recover (snapshot + journal replay through
``shardex.journal`` with an ``AccountMachine``), then drain → apply → group commit → send.
Nothing leaves before the group commit that journals it: replies to clients, forwards to the
engine shards, answers to their ``HAVE``. Flow is one way: router → here → engine shard →
(settlements) → here; the engine link is sequenced and idempotent both ways
(``shardex.accounts.link``), repaired by ``SYNC``/``HAVE`` (see ``shardex.wire.protocol``).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import zmq
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from shardex.accounts.assets import MAX_UNITS
from shardex.accounts.codes import (
    A_AMEND,
    A_DEPOSIT,
    A_NEW,
    A_WITHDRAW,
    AE_ANOMALY,
    AE_BALANCE,
    AE_FORWARD,
    AE_GAP,
    AE_REJECTED,
    AE_REPEATED,
    REJ_UNKNOWN_ASSET,
    reject_name,
)
from shardex.accounts.link import APPLY, DUPLICATE, ResendGate
from shardex.accounts.machines import (
    AccountMachine,
    AccountMachineFactory,
    ForwardRepair,
    _env_size,
)
from shardex.accounts.orders import account_orders, held_rows
from shardex.amounts import parse_decimal
from shardex.auth import (
    DOMAIN_CLIENTS,
    DOMAIN_EVENTS,
    KeyInfo,
    KeyStore,
    Registry,
    ZapHandler,
    client_socket,
    server_socket,
    user_of,
)
from shardex.datadir import check_routing
from shardex.engine import Market
from shardex.engine.book import IntegrityError
from shardex.engine.codes import (
    EV_REJECTED,
    OP_AMEND,
    OP_NEW,
    OP_REJECT,
    REJ_MALFORMED,
    REJ_NOT_ALLOWED,
    REJ_OFF_GRID,
    REJ_OUT_OF_RANGE,
    REJ_UNKNOWN_OP,
)
from shardex.journal import Journal, JournalError, JournalUnavailable
from shardex.layout import LINK_REPLICAS
from shardex.metrics import serve
from shardex.node.failover import Promotion, run_failover
from shardex.node.fencing import fence
from shardex.node.leader import Replicator, replica_families
from shardex.node.nulljournal import NullJournal
from shardex.node.outbox import DirectPort, RouterLink, outbox_families
from shardex.node.ring import JOURNAL_READ_BUDGET
from shardex.node.runtime import exit_now, tune_gc
from shardex.recovery import recover_visibly, snapshot_every_default, snapshot_interval_default
from shardex.wire.protocol import (
    BATCH,
    BATCH_REQUEST_WIDTH,
    ERR_JOURNAL,
    ERR_OVERLOADED,
    LINK_FWD,
    LINK_HAVE,
    LINK_SETTLE,
    LINK_SYNC,
    MAX_ID_LEN,
    OP_AUDIT,
    OP_BALANCE,
    OP_DEPOSIT,
    OP_EVENTS,
    OP_HELLO,
    OP_ORDER,
    OP_STATUS,
    OP_WITHDRAW,
    decode_batch,
    decode_request,
    edge_command,
    encode_events,
    encode_reply,
    internal_op_refusal,
    markets_to_wire,
    packb,
    quote,
    shard_for,
    unpackb,
)
from shardex.wire.transport import StopFlag, send_frames

log = logging.getLogger("shardex.accounts")

HELLO_EVERY_S = 1.0
MAX_EVENTS_REPLY = 5_000  # events per OP_EVENTS answer (the bridge asks again from there)
MAX_READS = 256  # balance/status/audit reads in one request (their replies are not small)
MAX_FORWARD_RESEND = 20_000  # forwards one HAVE answer re-sends from the journal
SYNC_EVERY_S = 1.0  # each engine link is re-synchronised this often (repairs lost messages)
SYNC_FULL_S = 0.5  # ... and this often while one is backed up (its HAVE ends the shedding)
_UNKNOWN_KEY = encode_reply(None, "authentication failed: unknown key")
# ops a client may send on the direct port (``AccountHandler.for_clients``)
_CLIENT_OPS = frozenset((OP_NEW, OP_AMEND, OP_ORDER, OP_BALANCE, OP_DEPOSIT, OP_WITHDRAW, OP_AUDIT))
_OVERLOADED = encode_reply(None, ERR_OVERLOADED)
_CANCEL_HERE = (
    "cancels go straight to the engine shard (routing key: the symbol), not to an account shard"
)


@dataclass
class AccountsConfig:
    index: int  # J
    shards: int  # M
    engines: int  # N (symbol → engine shard: crc32 % N)
    router: str  # router backend endpoint(s), comma-separated
    # engine shard i's account link endpoint, i = 0..N-1 (a replicated one: both replicas'
    # endpoints joined by ``+``, ``layout.LINK_REPLICAS``)
    engine_links: list[str]
    markets: Mapping[str, Market]
    journal_dir: str | None = None
    fsync: str = "batch"
    snapshot_every: int = field(default_factory=snapshot_every_default)
    snapshot_interval: float = field(default_factory=snapshot_interval_default)
    metrics_port: int | None = None
    keys_dir: str | None = None
    # Balance events for the bridge (phase 2): every event is published with its seq on ``pub``;
    # ``direct`` answers OP_STATUS / OP_EVENTS (range re-send from the event ring). None: off.
    pub: str | None = None
    direct: str | None = None
    pub_hwm: int = 100_000
    # Forwards to one engine shard that it has not confirmed (HAVE) before new orders and
    # amends for its symbols are refused ``overloaded``: an engine shard that is stopped,
    # wedged or slower than this shard must not make it ack (and queue) holds without bound.
    # ``SHARDEX_ACCOUNTS_MAX_UNCONFIRMED`` overrides it (tests make it small).
    max_unconfirmed: int = field(
        default_factory=lambda: _env_size("SHARDEX_ACCOUNTS_MAX_UNCONFIRMED", 50_000)
    )
    # A replicated leader (``--role auto``, issue 15): what its HELLO adds (role, epoch, node,
    # advertised endpoints) and the routing id of its router links (named after its epoch,
    # as an engine shard leader's: a deposed leader's link is never the one routed to).
    extra: dict[str, Any] = field(default_factory=dict)
    link_identity: str | None = None


class AccountHandler:
    """Client requests → ``AccountMachine`` commands and replies, without sockets.

    For any payload: a bounded reply, never an exception. Writes are journaled (``journal.add``)
    before they are applied; the caller commits before any reply or forward leaves.
    """

    def __init__(
        self,
        machine: AccountMachine,
        journal: Journal | NullJournal,
        registry: Registry | None = None,
    ) -> None:
        self.machine = machine
        self.core = machine.core
        self.table = machine.core.table
        self.journal = journal
        self.registry = registry
        self.journal_down: str | None = None
        self.commands = 0
        self.rejected = 0
        self.journal_resent = 0  # events re-sent to the bridge from the journal
        self.internal_errors = 0  # requests that hit a bug (ALERT): must stay 0
        # engine shards whose link is backed up (set by the node from their HAVE): new orders
        # and amends for their symbols are shed with ``overloaded``, counted in ``shed``
        self.full: set[int] = set()
        self.linked: set[int] = set()  # engine shards heard from (the node shares its set)
        self.shed = 0
        self.key: KeyInfo | None = None
        self.replica: Any = None  # a replicated leader's ``Replicator`` (role, epoch: status)
        # Set when an engine shard has applied more forwards from this shard than its chain to
        # it holds (the chains were rebuilt under another routing): new orders and amends are
        # refused with it, and nothing is forwarded or re-sent any more (ALERT).
        self.halted: str | None = None

    def apply(self, cmd: tuple, out: list[tuple]) -> int:
        """Journal and apply one core command; returns where its events start in ``out``."""
        start = len(out)
        self.journal.add(self.machine.seq, cmd)
        self.machine.apply(cmd, out)
        self.commands += 1
        return start

    def handle(self, payload: bytes, out: list[tuple], user: str | None = None) -> bytes:
        """One client request → its reply. Never raises: the core's contract is that bad
        input is refused before anything changes; if a bug breaks it anyway, the process must
        survive (ALERT, counted, an error reply), as the engine shard's ``handle`` does."""
        try:
            return self._handle(payload, out, user)
        except Exception as exc:
            return self._internal_error(exc)

    def _to_full(self, cmd: Any) -> bool:
        """Whether ``cmd`` is a new or amend for a symbol of a backed-up engine shard."""
        if _op(cmd) not in (OP_NEW, OP_AMEND):
            return False
        symbol = _at(cmd, 1)
        return (
            type(symbol) is str
            and symbol in self.table.pairs
            and self.core.engine_for(symbol) in self.full
        )

    def _internal_error(self, exc: Exception) -> bytes:
        self.internal_errors += 1
        log.exception("ALERT internal error while handling a request on an account shard")
        return encode_reply(None, f"internal error ({type(exc).__name__}); see shard log")

    def _handle(self, payload: bytes, out: list[tuple], user: str | None) -> bytes:
        key = None
        if self.registry is not None:
            key = self.registry.lookup(user)
            if key is None:
                return _UNKNOWN_KEY
        self.key = key
        cmds, error = decode_request(payload)
        if error is None:
            error = internal_op_refusal(cmds)
        if error is not None:
            return encode_reply(None, error)
        reads = (OP_STATUS, OP_BALANCE, OP_AUDIT, OP_ORDER)
        n_reads = n_audits = 0
        for c in cmds:
            op = _op(c)
            if op in reads:
                n_reads += 1
                # (an order listing scans every order of the shard, as an audit does)
                n_audits += op == OP_AUDIT or (op == OP_ORDER and len(c) == 2)
        if n_reads > MAX_READS or n_audits > 1:
            # refused before any work: 200,000 audits in a 400 KB frame made a 36 MB reply
            # and a 5.5 s stall of the shard (an audit walks every account and order)
            return encode_reply(None, f"too many reads in one request ({n_reads}, {n_audits} "
                                      f"audits): at most {MAX_READS}, and one audit")  # fmt: skip
        if self.journal_down is not None and any(_op(c) not in reads for c in cmds):
            return encode_reply(None, f"{ERR_JOURNAL}: {self.journal_down}")
        if self.halted is not None and any(_op(c) in (OP_NEW, OP_AMEND) for c in cmds):
            return encode_reply(None, f"halted: {self.halted}")
        if self.full and any(self._to_full(c) for c in cmds):
            # nothing of the request is journaled or held: the client knows it did not run
            self.shed += len(cmds)
            return _OVERLOADED
        results = []
        for cmd in cmds:
            op = _op(cmd)
            if op == OP_STATUS:
                results.append(self.status())
            elif op == OP_BALANCE:
                results.append(self.balance(cmd))
            elif op == OP_AUDIT:
                results.append(self.audit() if len(cmd) == 1 else self.audit_page(cmd))
            elif op == OP_ORDER:
                results.append(self.held(cmd) if len(cmd) != 2 else self.open_orders(cmd))
            elif op in (OP_DEPOSIT, OP_WITHDRAW):
                results.append(self.transfer(cmd, out))
            elif op in (OP_NEW, OP_AMEND):
                results.append(self.order(cmd, out))
            else:
                reason = _CANCEL_HERE if op == 2 else f"unknown op {quote(op)} for an account shard"
                results.append([self._rej(cmd, reason, REJ_UNKNOWN_OP)])
        return encode_reply(results)

    # -- writes ---------------------------------------------------------------------------------

    def _rej(self, cmd: Any, reason: str, code: int) -> tuple:
        self.rejected += 1
        sym = _at(cmd, 1)
        oid = _at(cmd, 2)
        return (
            EV_REJECTED,
            self.machine.seq,
            sym if type(sym) is str and len(sym) <= 32 else "",
            oid if type(oid) is str and len(oid) <= 64 else "",
            reason,
            code,
        )

    def order(self, cmd: tuple, out: list[tuple]) -> list[tuple]:
        """A new (11 engine fields, + a budget for a market buy) or amend → hold and forward:
        ``[]`` when forwarded, else one ``rejected`` event with the reason and code."""
        budget = None
        if cmd[0] == OP_NEW and len(cmd) == 12:
            raw = cmd[11]
            cmd = cmd[:11]
            symbol = _at(cmd, 1)
            pair = self.table.pairs.get(symbol) if type(symbol) is str else None
            if raw is not None:
                amount = _decimal(raw)
                budget = self.table.to_units(pair.quote, amount) if pair and amount else None
                if budget is None:
                    return [self._rej(cmd, f"budget {quote(raw)} is not an amount", REJ_OFF_GRID)]
                if budget > MAX_UNITS:  # (it would not even fit the journal's 64-bit ints)
                    return [self._rej(cmd, f"budget {raw:.40} is out of range", REJ_OUT_OF_RANGE)]
        cmd = edge_command(cmd)
        if cmd[0] == OP_REJECT:
            return [self._rej(cmd, cmd[3], cmd[4] if len(cmd) > 4 else REJ_MALFORMED)]
        if self.key is not None and not self.key.may_act_for(cmd[3]):
            return [self._rej(cmd, f"account {cmd[3]} not allowed for this key", REJ_NOT_ALLOWED)]
        acmd = (A_NEW, *cmd[1:], budget) if cmd[0] == OP_NEW else (A_AMEND, *cmd[1:])
        start = self.apply(acmd, out)
        for ev in out[start:]:
            if ev[0] == AE_REJECTED:
                self.rejected += 1
                return [(EV_REJECTED, ev[1], cmd[1], cmd[2], ev[4], ev[5])]
        return []

    def transfer(self, cmd: tuple, out: list[tuple]) -> dict[str, Any]:
        """Deposit/withdraw (admin keys only): a map, ``{"ok": True, ...balance}`` or
        ``{"rejected": reason, "code": name}``."""
        if len(cmd) != 5 or not all(type(v) is str for v in cmd[1:]):
            return self._map_rej("transfer: expected (op, account, asset, amount, ref)", 0)
        op, account, asset, raw, ref = cmd
        if self.key is not None and self.key.role != "admin":
            return self._map_rej("deposits and withdrawals need an admin key", REJ_NOT_ALLOWED)
        if not (0 < len(account) <= MAX_ID_LEN and 0 < len(ref) <= MAX_ID_LEN):
            # refused before the journal: a 1 MiB account or ref must not cost a 1 MiB record
            return self._map_rej(
                f"account and ref must be strings of 1..{MAX_ID_LEN} chars", REJ_MALFORMED
            )
        if asset not in self.table.units:
            return self._map_rej(f"unknown asset {asset[:40]!r}", REJ_UNKNOWN_ASSET)
        amount = _decimal(raw)
        if amount is None:
            return self._map_rej(f"amount {raw[:40]!r} is not a decimal", REJ_MALFORMED)
        if amount.adjusted() > 30:  # no balance comes near: refused before any arithmetic
            return self._map_rej(f"amount {raw[:40]} is out of range", REJ_OUT_OF_RANGE)
        units = self.table.to_units(asset, amount)
        if units is None:
            unit = self.table.units[asset]
            return self._map_rej(f"amount {raw[:40]} is not a multiple of {unit}", REJ_OFF_GRID)
        if abs(units) > MAX_UNITS:  # journaled commands must fit msgpack's 64-bit ints
            return self._map_rej(
                f"amount {raw[:40]} is above what an account shard can hold "
                f"({self.table.fmt(asset, MAX_UNITS)} {asset})",
                REJ_OUT_OF_RANGE,
            )
        a = A_DEPOSIT if op == OP_DEPOSIT else A_WITHDRAW
        start = self.apply((a, account, asset, units, ref), out)
        for ev in out[start:]:
            if ev[0] == AE_REJECTED:
                return self._map_rej(ev[4], ev[5])
            if ev[0] == AE_REPEATED:
                avail, held = self.core.balance(account, asset)
                return self._balance_map(account, asset, avail, held, repeated=True)
            if ev[0] == AE_BALANCE:
                return self._balance_map(account, asset, ev[4], ev[5])
        return self._map_rej("transfer had no effect", REJ_MALFORMED)  # unreachable

    def _map_rej(self, reason: str, code: int) -> dict[str, Any]:
        self.rejected += 1
        return {"rejected": reason, "code": reject_name(code)}

    def _balance_map(self, account, asset, avail, held, repeated=False) -> dict[str, Any]:
        fmt = self.table.fixed  # at the asset's precision, as the balance read
        out = {"ok": True, "account": account, "asset": asset,
               "available": fmt(asset, avail), "held": fmt(asset, held)}  # fmt: skip
        if repeated:
            out["repeated"] = True
        return out

    # -- reads ----------------------------------------------------------------------------------

    def balance(self, cmd: tuple) -> dict[str, Any]:
        account = _at(cmd, 1)
        if len(cmd) != 2 or type(account) is not str or not 0 < len(account) <= MAX_ID_LEN:
            # (the answer names the account: a 1 MiB name would be echoed whole)
            return {"error": f"balance: expected (op, account of 1..{MAX_ID_LEN} chars)"}
        key = self.key
        if key is not None and key.role not in ("admin", "reader") and not key.may_act_for(account):
            return {"error": f"account {account[:64]} not allowed for this key"}
        if not self.core.owns(account):
            return {"error": f"account {account[:64]} is not on account shard {self.core.shard}"}
        fmt = self.table.fixed  # every balance of an asset at its precision: columns line up
        cells = self.core.balances.get(account, {})
        return {
            "account": account,
            "shard": self.core.shard,
            "balances": {a: [fmt(a, c[0]), fmt(a, c[1])] for a, c in sorted(cells.items())},
            "orders": sum(1 for k in self.core.orders if k[0] == account),
            "seq": self.core.seq,
        }

    def held(self, cmd: tuple) -> dict[str, Any]:
        """``(OP_ORDER, symbol, account, id)`` asked of the account shard: whether it holds
        funds for that order now (``"held"``: taken and forwarded; pending on or live at the
        engine shard) or not (``"not_held"``: never taken, or ended and settled, which the
        engine shard's own ``OP_ORDER`` then tells apart).

        Why here: a client whose reply was lost asks for its order's fate. Asked of the
        engine shard alone, an order still queued at a stopped or slow account shard was
        reported "not executed" and then ran. This query travels the same router link as the
        order, behind it, so when it is answered the order has been taken or refused."""
        if len(cmd) != 4 or not all(type(v) is str for v in cmd[1:]):
            return {"error": "order: expected (op, symbol, account, id)"}
        _, symbol, account, oid = cmd
        key = self.key
        if key is not None and key.role not in ("admin", "reader") and not key.may_act_for(account):
            return {"error": f"account {account[:64]} not allowed for this key"}
        o = self.core.orders.get((account, symbol, oid))
        out: dict[str, Any] = {
            "state": "held" if o is not None else "not_held",
            "symbol": symbol[:32],
            "account": account[:64],
            "id": oid[:64],
            "seq": self.core.seq,
        }
        if o is not None:
            out["open_lots"] = o.rem
            out["pending"] = o.pending  # amends forwarded, not yet settled (the SDK: unknown)
        return out

    def open_orders(self, cmd: tuple) -> dict[str, Any]:
        """``(OP_ORDER, account)``: the account's open orders with what each holds (the
        account's own key, or an admin/reader key)."""
        account = cmd[1]
        if type(account) is not str or not 0 < len(account) <= MAX_ID_LEN:
            return {"error": f"orders: expected (op, account of 1..{MAX_ID_LEN} chars)"}
        key = self.key
        if key is not None and key.role not in ("admin", "reader") and not key.may_act_for(account):
            return {"error": f"account {account[:64]} not allowed for this key"}
        if not self.core.owns(account):
            return {"error": f"account {account[:64]} is not on account shard {self.core.shard}"}
        return {**account_orders(self.core.orders, account, self.table), "seq": self.core.seq}

    def audit_page(self, cmd: tuple) -> dict[str, Any]:
        """``(OP_AUDIT, offset)``: a page of every order this shard holds funds for, in
        integer units (``shardex.accounts.orders``), for the per-order audit."""
        key = self.key
        if key is not None and key.role not in ("admin", "reader"):
            return {"error": "audit: not allowed for this key"}
        if type(cmd[1]) is not int or cmd[1] < 0:
            return {"error": "audit: expected (op, offset >= 0)"}
        core = self.core
        return {"shard": core.shard, "seq": core.seq, "total": len(core.orders),
                "orders": held_rows(core.orders, cmd[1])}  # fmt: skip

    def audit(self) -> dict[str, Any]:
        """This shard's books, in integer units, for a cluster-wide conservation check (the
        inflows by trade of all account shards sum to zero), and its own integrity check."""
        key = self.key
        if key is not None and key.role not in ("admin", "reader"):
            return {"error": "audit: not allowed for this key"}
        core = self.core
        try:
            core.check_integrity()
            integrity = "ok"
        except IntegrityError as exc:
            integrity = str(exc)[:300]
        totals: dict[str, int] = {}
        for cells in core.balances.values():
            for asset, (avail, held) in cells.items():
                totals[asset] = totals.get(asset, 0) + avail + held
        return {
            "shard": core.shard,
            "shards": core.shards,
            "seq": core.seq,
            "units": {a: str(u) for a, u in core.table.units.items()},
            "balances": totals,
            "fees": dict(core.fees),
            "deposited": dict(core.deposited),
            "withdrawn": dict(core.withdrawn),
            "flow": dict(core.flow),
            "open_orders": len(core.orders),
            "anomalies": core.anomalies,
            "integrity": integrity,
        }

    @staticmethod
    def for_clients(payload: bytes) -> bool:
        """Whether a request on the direct port is a client's (its first op is an order, a
        transfer or a read other than status): served by ``handle`` exactly as one from the
        router (same key checks, replies after the group commit), so a client can skip the
        router hop. Anything else is the bridge's (``direct``)."""
        cmds, error = decode_request(payload)
        if error is not None or not cmds:
            return False
        op = _op(cmds[0])  # anything a peer sent: only an int is an op (a dict is unhashable)
        return type(op) is int and op in _CLIENT_OPS

    def direct(self, payload: bytes, user: str | None, published: int) -> bytes:
        """A request on the direct port (the bridge): ``OP_STATUS`` → ``{"seq": published}``,
        ``(OP_EVENTS, first, last)`` → the events of that range from the ring. Only what has
        been journaled and published is visible here (``published``): an event the journal
        could still lose must never reach Redis. Never raises (see ``handle``)."""
        try:
            return self._direct(payload, user, published)
        except Exception as exc:
            return self._internal_error(exc)

    def _direct(self, payload: bytes, user: str | None, published: int) -> bytes:
        key = None
        if self.registry is not None:
            key = self.registry.lookup(user)
            if key is None:
                return _UNKNOWN_KEY
            if key.role not in ("bridge", "admin"):
                return encode_reply([{"error": "events: not allowed for this key"}])
        cmds, error = decode_request(payload)
        if error is None:
            error = internal_op_refusal(cmds)  # (read-only here anyway: the same answer)
        if error is not None:
            return encode_reply(None, error)
        results: list[Any] = []
        for cmd in cmds:
            op = _op(cmd)
            if op == OP_STATUS:
                results.append({"seq": published, "account_shard": self.core.shard})
            elif op == OP_EVENTS:
                results.append(self.events(cmd, published))
            else:
                results.append({"error": f"op {quote(op)} is not served on the direct port"})
        return encode_reply(results)

    def events(self, cmd: tuple, published: int) -> dict[str, Any]:
        if (
            len(cmd) != 3
            or type(cmd[1]) is not int
            or type(cmd[2]) is not int
            or not (0 < cmd[1] <= cmd[2])
        ):
            return {"error": "events: expected (op, first seq, last seq) with 0 < first <= last"}
        first, last = cmd[1], min(cmd[2], cmd[1] + MAX_EVENTS_REPLY - 1, published)
        if first > last:
            return {"events": [], "seq": published}
        evs = self.machine.events.get(first, last)
        if evs is None and isinstance(self.journal, Journal):
            # Older than the ring: regenerated from the journal (replay is deterministic, so
            # the events are the ones published), bounded work per request with the cursor
            # kept between requests, as the engine shard's range re-send does.
            try:
                evs = self.journal.events(first, last, JOURNAL_READ_BUDGET)
            except JournalError as exc:
                return {"error": str(exc), "seq": published}
            if evs == []:  # still replaying towards ``first``: ask again
                return {"events": [], "seq": published, "pending": True}
            self.journal_resent += len(evs)
        if evs is None:
            return {
                "error": f"events {first}..{last} are gone (ring starts at "
                f"{self.machine.events.first}, no journal)",
                "seq": published,
            }
        return {"events": evs, "seq": published}

    def status(self) -> dict[str, Any]:
        core = self.core
        return {
            "account_shard": core.shard,
            "shards": core.shards,
            "pid": os.getpid(),
            "seq": core.seq,
            "accounts": len(core.balances),
            "open_orders": len(core.orders),
            "commands": self.commands,
            "internal_errors": self.internal_errors,
            "shed": self.shed,
            "engines_backed_up": sorted(self.full),
            "engines_linked": sorted(self.linked),
            "duplicates": core.duplicates,
            "gaps": core.gaps,
            "anomalies": core.anomalies,
            "inbox": dict(core.inbox.last),
            "outbox": dict(core.outbox.last),
            "journal": "unavailable: " + self.journal_down if self.journal_down else "ok",
            **({"halted": self.halted} if self.halted else {}),
            **(self.replica.info() if self.replica is not None else {}),
        }


def _op(cmd: Any) -> Any:
    return cmd[0] if type(cmd) is tuple and cmd else None


def _at(cmd: Any, i: int) -> Any:
    try:
        return cmd[i]
    except Exception:
        return None


def _decimal(raw: Any) -> Decimal | None:
    """An amount or budget: a plain, unsigned ASCII decimal (``shardex.amounts``), else None."""
    return parse_decimal(raw)


class AccountNode:
    """The account shard process: recover, then loop drain → apply → commit → send.

    Replicated (``--role auto``, ``shardex.node.replica``): the leader ships each group commit
    to its standby before its own fsync, and what a batch sends (balance events, forwards to
    engine shards, replies) waits until the in-sync standbys have it (high watermark), as an
    engine shard leader's replies and events do: a forward, a reply or an event that left
    before would be money the next leader never moved. Past its lease deadline it runs
    nothing and answers ``not_leader``.
    """

    def __init__(
        self,
        cfg: AccountsConfig,
        recovered: tuple[AccountMachine, Journal] | None = None,
        replicate: Any = None,
    ) -> None:
        """``recovered``: a promoted standby's machine and journal; ``replicate(ctx, zmq)``:
        builds the ``replica.Replicator`` of a replicated leader."""
        if not 0 <= cfg.index < cfg.shards:
            raise ValueError(f"account shard {cfg.index} out of range for {cfg.shards}")
        if len(cfg.engine_links) != cfg.engines:
            raise ValueError(f"{len(cfg.engine_links)} engine links for {cfg.engines} engines")
        self.cfg = cfg
        self.zmq = zmq
        self.ctx = zmq.Context()
        self.zap: ZapHandler | None = None
        self.key = None
        if cfg.keys_dir:
            store = KeyStore(cfg.keys_dir)
            self.key = store.process_key(f"accounts-{cfg.index}", "accounts", cfg.index)
            self.zap = ZapHandler(self.ctx, store.registry())
            self.server = store.server()
        machine, journal = recovered or self.recover()
        self.handler = AccountHandler(machine, journal, self.zap.registry if self.zap else None)
        self.machine = machine
        self.published = machine.seq  # events up to here are journaled (and were published)
        self.stop = StopFlag()
        self.out: list[tuple] = []
        self.replies: list[tuple[RouterLink, list[bytes]]] = []  # sent after the commit
        self.free: list[tuple[RouterLink, list[bytes]]] = []  # sent even if it fails
        self.haves: dict[int, int] = {}  # engine shard → forwards it has (answered after commit)
        # Engine shards heard from on their link (a HAVE or settlements): until then a forward
        # waits in ZeroMQ for the connection, and a cancel on the short path (router → engine
        # shard) could overtake it; readiness checks (``shardex up``, tests) wait for this.
        self.handler.linked = self.linked = set()
        self.syncs_due: set[int] = set()  # engine shards to SYNC after this commit (a gap)
        self.counts = {"forwards": 0, "settlements": 0, "duplicates": 0, "resent": 0,
                       "unsent": 0, "malformed": 0, "unpublished": 0, "journal": 0}  # fmt: skip
        self.repairs: dict[int, ForwardRepair] = {}  # journal re-sends under way, per engine
        # per engine shard: seqs of the forwards sent and not yet confirmed by its HAVE
        self.unconfirmed: dict[int, deque[int]] = {i: deque() for i in range(cfg.engines)}
        # per engine shard: which forwards its HAVEs call for re-sending (``_resend_due``);
        # what the journal put on each link before we started counts as sent
        last = machine.core.outbox.last
        self.gates = {i: ResendGate(SYNC_EVERY_S, last.get(i, 0)) for i in range(cfg.engines)}
        self.started = time.monotonic()
        self.last_hello = 0.0
        self.last_sync = 0.0
        self.last_snap = time.monotonic()
        self.last_snap_seq = machine.seq
        self.last_snap_records = 0
        self.last_journal_try = 0.0
        # Replicated leader: each committed batch's (seq after it, events, replies) waits here
        # for the high watermark (``release_acked``); ``released``: the seq released so far.
        self.replica: Any = replicate(self.ctx, zmq) if replicate is not None else None
        self.handler.replica = self.replica
        self.repl_wait: deque[tuple[int, list[tuple], list[tuple[RouterLink, list[bytes]]]]] = (
            deque()
        )
        self.released = machine.seq
        self.fenced = False
        self.refused = 0  # requests answered not_leader past the lease deadline
        self._sockets()
        if self.replica is not None:
            self.poller.register(self.replica.sock, zmq.POLLIN)

    def recover(self) -> tuple[AccountMachine, Journal | NullJournal]:
        cfg = self.cfg
        n = cfg.engines
        factory = AccountMachineFactory(cfg.index, cfg.shards, lambda s: shard_for(s, n), engines=n)
        if not cfg.journal_dir:
            log.warning("account shard %d has no journal: balances are lost if it dies", cfg.index)
            return factory.new(cfg.markets), NullJournal()
        check_routing(cfg.journal_dir, n, f"account shard {cfg.index}")
        journal = Journal(cfg.journal_dir, cfg.markets, fsync=cfg.fsync, machine=factory)
        t, cpu = time.monotonic(), time.process_time()
        rec = recover_visibly(
            journal.recover, f"account shard {cfg.index}", self.ctx, cfg.router,
            f"accounts-{cfg.index}", self.key, {"tier": "accounts", "shard": cfg.index,
                                                "shards": cfg.shards, "pid": os.getpid()},
        )  # fmt: skip
        machine: AccountMachine = rec.engine  # type: ignore[assignment]
        log.info(
            "recovered account shard %d from %s: snapshot seq %s + %d journaled commands in "
            "%.2fs (%.2fs CPU) → seq %d, %d accounts, %d open orders",
            cfg.index, cfg.journal_dir, rec.snapshot_seq, rec.replayed, time.monotonic() - t,
            time.process_time() - cpu,
            machine.seq, len(machine.core.balances), len(machine.core.orders),
        )  # fmt: skip
        if rec.replayed or rec.snapshot_seq is None:  # (a restored snapshot was just checked)
            machine.core.check_integrity()  # refuse to serve books that do not balance
        return machine, journal

    def _sockets(self) -> None:
        zmq, cfg = self.zmq, self.cfg
        secure = self.zap is not None
        ident = f"accounts-{cfg.index}".encode()
        self.links: list[RouterLink] = []
        for endpoint in cfg.router.split(","):
            if not endpoint:
                continue
            d = self.ctx.socket(zmq.DEALER)
            if not secure:  # secure: the router learns this link from our signed HELLO
                d.setsockopt(zmq.IDENTITY, (cfg.link_identity or ident.decode()).encode())
            d.setsockopt(zmq.LINGER, 0)
            d.setsockopt(zmq.HEARTBEAT_IVL, 500)
            d.setsockopt(zmq.HEARTBEAT_TIMEOUT, 1500)
            d.setsockopt(zmq.RCVHWM, 20_000)
            d.setsockopt(zmq.SNDHWM, 50_000)
            if secure:
                client_socket(d, self.key)
            d.connect(endpoint)
            self.links.append(RouterLink(d, zmq))
        self.engines: list[Any] = []
        for endpoints in cfg.engine_links:
            replicas = endpoints.split(LINK_REPLICAS)
            d = self.ctx.socket(zmq.DEALER)
            if not secure:  # secure: the engine shard learns our (libzmq) id from our key
                d.setsockopt(zmq.IDENTITY, ident)
            d.setsockopt(zmq.LINGER, 0)
            d.setsockopt(zmq.SNDHWM, 100_000)
            d.setsockopt(zmq.RCVHWM, 100_000)
            d.setsockopt(zmq.HEARTBEAT_IVL, 500)
            d.setsockopt(zmq.HEARTBEAT_TIMEOUT, 1500)
            if len(replicas) > 1:
                # A replicated engine shard (``ep0+ep1``): only its leader has bound its
                # link endpoint, so with IMMEDIATE a message goes only to a connection that
                # completed its handshake, i.e. to the leader; a dead or paused (deposed)
                # one is dropped by the heartbeat within HEARTBEAT_TIMEOUT. What went to a
                # deposed leader meanwhile is never applied (it is past its lease deadline)
                # and the new leader's HAVE makes us re-send it: the link is sequenced and
                # idempotent. (One endpoint: no IMMEDIATE, messages wait for the connection.)
                d.setsockopt(zmq.IMMEDIATE, 1)
            if secure:
                client_socket(d, self.key)
            for endpoint in replicas:
                d.connect(endpoint)
            self.engines.append(d)
        self.pub = self.direct = None
        if cfg.pub:
            self.pub = self.ctx.socket(zmq.PUB)
            self.pub.setsockopt(zmq.SNDHWM, cfg.pub_hwm)
            self.pub.setsockopt(zmq.LINGER, 0)
            if secure:
                server_socket(self.pub, self.server, DOMAIN_EVENTS)
            self.pub.bind(cfg.pub)
        if cfg.direct:
            r = self.direct = self.ctx.socket(zmq.ROUTER)
            r.setsockopt(zmq.LINGER, 0)
            r.setsockopt(zmq.SNDHWM, 1_000)
            r.setsockopt(zmq.RCVHWM, 1_000)
            r.setsockopt(zmq.MAXMSGSIZE, 1 << 20)
            if secure:
                server_socket(r, self.server, DOMAIN_CLIENTS)
            r.bind(cfg.direct)
            self.direct_box = DirectPort(r, zmq)
        self.poller = zmq.Poller()
        if self.direct is not None:
            self.poller.register(self.direct, zmq.POLLIN)
        for link in self.links:
            self.poller.register(link.sock, zmq.POLLIN)
        for d in self.engines:
            self.poller.register(d, zmq.POLLIN)
        if self.zap is not None:
            self.poller.register(self.zap.sock, zmq.POLLIN)
        self.hello_msg = packb(
            (
                OP_HELLO,
                {
                    "tier": "accounts",
                    "shard": cfg.index,
                    "shards": cfg.shards,
                    "engines": cfg.engines,
                    "pid": os.getpid(),
                    "pub": cfg.pub,
                    "direct": cfg.direct,
                    "markets": markets_to_wire(cfg.markets),
                    **cfg.extra,
                },
            )
        )

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        cfg = self.cfg
        REGISTRY.register(_Collector(self))
        serve(cfg.metrics_port, "accounts", shard=str(cfg.index))
        tune_gc()
        log.info(
            "account shard %d/%d up (pid %d): router=%s engines=%s",
            cfg.index, cfg.shards, os.getpid(), cfg.router, ",".join(cfg.engine_links),
        )  # fmt: skip
        zmq = self.zmq
        try:
            while not self.stop:
                now = time.monotonic()
                if self.replica is not None and not self.replica_tick(now):
                    self.refuse()  # past our lease deadline: run nothing, send nothing
                    time.sleep(0.01)
                    continue
                self.fenced = False
                self.periodic(now)
                waiting = any(link.size for link in self.links)
                try:
                    ready = self.poller.poll(10 if waiting else 100 if self.replica is None else 20)
                except zmq.ZMQError:
                    continue
                if self.replica is not None and not self.replica.lease.valid():
                    continue  # (paused inside poll past our deadline: send and take nothing)
                for link in self.links:
                    if link.size:
                        link.pump()
                if ready:
                    if self.zap is not None:
                        self.zap.serve()
                    self.from_engines()
                self.sync_all(time.monotonic())  # (after reading the links: a current have)
                if ready:
                    self.from_routers()
                    self.flush()
                    self.from_direct()
                self.housekeeping(now)
        finally:
            self.close()

    def hello(self, now: float) -> None:
        """Register with each router (every ``HELLO_EVERY_S``; a full pipe skips one)."""
        self.last_hello = now
        for link in self.links:
            try:
                send_frames(link.sock, [b"", b"HELLO", self.hello_msg])
            except self.zmq.ZMQError:
                pass

    def periodic(self, now: float) -> None:
        if now - self.last_hello >= HELLO_EVERY_S:
            self.hello(now)
        if self.handler.journal_down is not None and now - self.last_journal_try >= 1.0:
            self.last_journal_try = now
            self.flush()

    def sync_all(self, now: float) -> None:
        """The periodic SYNC to every engine shard, sent right after its link was read: an
        engine shard re-sends what follows a ``have`` that did not move since the previous
        SYNC, so a ``have`` that is stale (sent at the top of a loop turn after a long one,
        with settlements waiting unread) made it re-send everything in flight (3% of a busy
        link's settlements under CPU contention)."""
        if now - self.last_sync >= (SYNC_FULL_S if self.handler.full else SYNC_EVERY_S):
            self.last_sync = now
            for i in range(self.cfg.engines):
                self.sync(i)

    def sync(self, i: int) -> None:
        """Tell engine shard ``i`` the last settlement applied from it: it re-sends what
        follows and answers HAVE (the forwards it has), so both directions heal."""
        have = self.machine.core.inbox.last.get(i, 0)
        try:
            send_frames(self.engines[i], [LINK_SYNC, packb((self.cfg.index, have))])
        except self.zmq.ZMQError:
            pass  # not connected yet: the next SYNC

    def from_routers(self) -> None:
        zmq = self.zmq
        secure = self.zap is not None
        for link in self.links:
            for _ in range(10_000):
                try:
                    frames = link.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                items = None
                if len(frames) == 2 and frames[0] == BATCH:
                    items = decode_batch(frames[1], BATCH_REQUEST_WIDTH)
                if items is None:
                    self.counts["malformed"] += 1
                    continue
                handler = self.handler
                for k in range(0, len(items), 4):
                    client, req, user, payload = items[k : k + 4]
                    who = user.decode("ascii", "replace") if secure else None
                    journaled = handler.commands
                    reply = handler.handle(payload, self.out, who)
                    if handler.journal_down is not None and handler.commands == journaled:
                        # journal down and nothing of this request in it (a read, or a write
                        # refused for the journal): answered now, not held with the batch
                        # the journal could not write (which would mute the shard)
                        self.free.append((link, [client, req, reply]))
                    else:
                        self.replies.append((link, [client, req, reply]))

    def from_direct(self) -> None:
        """The bridge's status polls and range repairs (after a flush: ``published`` is
        current), and clients' requests (orders, transfers, reads: as from a router, their
        replies after a group commit here), bounded per wake-up; a malformed request is
        dropped (or answered)."""
        if self.direct is None:
            return
        zmq = self.zmq
        secure = self.zap is not None
        handler = self.handler
        took = False
        for _ in range(100):
            try:
                if secure:
                    raw = self.direct.recv_multipart(zmq.NOBLOCK, copy=False)
                    frames, user = [f.bytes for f in raw], user_of(raw[-1])
                else:
                    frames, user = self.direct.recv_multipart(zmq.NOBLOCK), None
            except zmq.Again:
                return
            if len(frames) != 4:  # [identity, routing key, request id, payload]
                self.counts["malformed"] += 1
                continue
            if handler.for_clients(frames[3]):
                journaled = handler.commands
                reply = handler.handle(frames[3], self.out, user)
                down = handler.journal_down is not None and handler.commands == journaled
                (self.free if down else self.replies).append(
                    (self.direct_box, [frames[0], frames[2], reply]))  # fmt: skip
                took = True
                continue
            reply = handler.direct(frames[3], user, self.published)
            self.direct_box.send([frames[0], frames[2], reply])
        if took:
            self.flush()  # (now, not after the next poll: the replies wait for this commit)

    def from_engines(self) -> None:
        zmq = self.zmq
        core = self.machine.core
        for i, sock in enumerate(self.engines):
            for _ in range(1_000):
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    kind, payload = frames
                    sender, body = unpackb(payload)
                    if sender != i:
                        raise ValueError
                except Exception:
                    self.counts["malformed"] += 1
                    continue
                self.linked.add(i)
                if kind == LINK_HAVE:
                    if type(body) is int and not self.diverged(i, body):
                        self.haves[i] = body
                        self.gates[i].read()  # (what was sent until now had a period more)
                        self.confirmed(i, body)
                    continue
                if kind != LINK_SETTLE or type(body) is not tuple:
                    self.counts["malformed"] += 1
                    continue
                if self.handler.journal_down is not None:
                    continue  # not journaled, not applied: re-sent on the next SYNC
                for msg in body:
                    eseq, prev = _at(msg, 2), _at(msg, 3)
                    if type(eseq) is int and type(prev) is int and _at(msg, 1) == i:
                        verdict = core.inbox.check(i, eseq, prev)
                        if verdict == DUPLICATE:
                            self.counts["duplicates"] += 1
                            continue
                        if verdict != APPLY:
                            self.syncs_due.add(i)  # a gap: ask for the rest (after the commit)
                            break
                    self.handler.apply(msg, self.out)  # a malformed one: the core's anomaly
                    self.counts["settlements"] += 1

    def flush(self) -> None:
        """Group commit, then forwards, replies, answers to HAVE and SYNCs for gaps.

        Replicated: the batch is shipped to the standby before our own fsync (the two
        overlap) and what it sends waits in ``repl_wait`` for the high watermark."""
        handler = self.handler
        journal = handler.journal
        rep = self.replica
        if rep is not None and handler.journal_down is None:
            batch = journal.buffered()  # type: ignore[union-attr]
            if batch is not None:  # (a retried commit is not shipped twice: it is down then)
                rep.ship(batch[0], batch[1], self.machine.seq)
        try:
            journal.commit()
        except JournalUnavailable as exc:
            if handler.journal_down is None:
                log.error("ALERT journal of account shard %d cannot write (%s): holding "
                          "replies, refusing writes", self.cfg.index, exc)  # fmt: skip
            handler.journal_down = str(exc)[:200] or "write failed"
            self._send_free()
            return
        if handler.journal_down is not None:
            log.warning("journal of account shard %d writes again", self.cfg.index)
            handler.journal_down = None
        for ev in self.out:
            kind = ev[0]
            if kind == AE_GAP:
                self.syncs_due.add(ev[2])
            elif kind == AE_ANOMALY:
                log.error("ALERT account shard %d: settlement anomaly from engine shard %s "
                          "eseq %s: %s", self.cfg.index, ev[2], ev[3], ev[4])  # fmt: skip
        if rep is None:
            self._release(self.out, self.replies)
            self.released = self.machine.seq
        elif self.out or self.replies:
            self.repl_wait.append((self.machine.seq, self.out, self.replies))
            self.out, self.replies = [], []
            self.release_acked()
        self._send_free()
        if self.haves and handler.halted is None:
            haves, self.haves = self.haves, {}
            now = time.monotonic()
            for i, have in haves.items():
                bound = self._resend_due(i, have, now)
                if bound is None:
                    continue
                msgs, complete = self.machine.resend(i, have)
                if complete:
                    self.repairs.pop(i, None)
                else:
                    msgs = self._journal_forwards(i, have)
                if rep is not None:  # never a forward the standby may not have yet
                    bound = min(bound, self.released)
                msgs = [m for m in msgs if m[0] <= bound]
                if msgs:
                    self.counts["resent"] += len(msgs)
                    for k in range(0, len(msgs), 1000):
                        self._send_fwd(i, msgs[k : k + 1000])
        if self.syncs_due:
            due, self.syncs_due = self.syncs_due, set()
            for i in due:
                if 0 <= i < self.cfg.engines:
                    self.sync(i)

    def _release(self, events: list[tuple], replies: list[tuple[RouterLink, list[bytes]]]
                 ) -> None:  # fmt: skip
        """What a durable (and, replicated, acked) batch sends: its events on the PUB, its
        forwards to the engine shards, then its replies. Replies after the forwards: "ok"
        means held and forwarded, and a client may cancel at once along the short path
        (router → engine shard); the forward must be on its link before the client can even
        know the order exists."""
        handler = self.handler
        per: dict[int, list[tuple]] = {}
        if events:
            self.publish(events)
        for ev in events:
            if ev[0] == AE_FORWARD:
                per.setdefault(ev[2], []).append((ev[1], ev[3], ev[4]))
        events.clear()
        for i, fwds in per.items():
            self.counts["forwards"] += len(fwds)
            if handler.halted is not None:
                self.counts["unsent"] += len(fwds)  # (never a forward on a diverged chain)
                continue
            self.gates[i].put(fwds[-1][0])
            self._send_fwd(i, fwds)
            pending = self.unconfirmed.get(i)
            if pending is not None:
                pending.extend(f[0] for f in fwds)
                if len(pending) >= self.cfg.max_unconfirmed and i not in handler.full:
                    handler.full.add(i)
                    log.warning("engine shard %d has not confirmed %d forwards: new orders for "
                                "its symbols are shed (overloaded)", i, len(pending))  # fmt: skip
        for link, frames in replies:
            link.send(frames)
        replies.clear()

    # -- replication (issue 15; ``shardex.node.replica``) ---------------------------------------

    def release_acked(self) -> None:
        """Release waiting batches up to the high watermark, only while our lease is valid
        (monotonic local deadline, earlier than its expiry in Redis)."""
        rep = self.replica
        if not self.repl_wait or not rep.lease.valid():
            return
        hw = rep.hw()
        wait = self.repl_wait
        if wait[0][0] > hw:
            return
        while wait and wait[0][0] <= hw:
            seq, events, replies = wait.popleft()
            self._release(events, replies)
            self.released = seq
        for link in self.links:
            link.commit()

    def replica_tick(self, now: float) -> bool:
        """Renew the lease, take acks, release what they cover; False past our deadline
        (raises ``LeaseLost`` once Redis says the lease is someone else's)."""
        self.replica.tick(now)
        self.release_acked()
        return self.replica.lease.valid()

    def refuse(self) -> None:
        """Past the lease deadline: every request waiting (routers' and direct) is answered
        ``not_leader``, engine links are not read (``fencing.fence``)."""
        socks = [(link.sock, True) for link in self.links]
        if self.direct is not None:
            socks.append((self.direct, False))
        self.refused += fence(self.zmq, self.replica, f"account shard {self.cfg.index}", socks,
                              self.links, self.hello_msg, self.fenced)  # fmt: skip
        self.fenced = True

    def _send_free(self) -> None:
        """Replies that wait for no journal write, then every link's batch of replies."""
        for link, frames in self.free:
            link.send(frames)
        self.free.clear()
        for link in self.links:
            link.commit()

    def _resend_due(self, i: int, have: int, now: float) -> int | None:
        """Re-send the forwards to engine shard ``i`` after its HAVE's ``have`` up to the seq
        returned, or none (None): ``link.ResendGate``.

        Not while ``have`` advances: the forwards after it are then in flight (queued on the
        link, or in the engine shard's backlog), not lost, and re-sending them on every HAVE
        made a busy link carry each one again (46k of 148k forwards in an 8 s closed-loop run,
        nothing lost). A lost forward stops the engine shard at the one before it (the next
        one is a gap), so its HAVEs repeat ``have``; only what was sent before the previous
        HAVE was read is then re-sent (a HAVE read with a burst of orders is answered after
        the burst's forwards left, and names none of them). At most once per ``SYNC_EVERY_S``
        per engine shard (a journal-down engine shard repeats its HAVE and applies nothing);
        a re-send from the journal under way continues on every HAVE."""
        return self.gates[i].answer(have, now, i in self.repairs)

    def diverged(self, i: int, have: int) -> bool:
        """Whether engine shard ``i``'s HAVE says it applied forwards from this shard beyond
        the last one this shard's chain to it holds: then the chains were rebuilt under
        another routing than they were sent under (the data's shard count changed), and
        re-sending would place orders twice or on shards that do not hold their pairs. The
        shard halts: ALERT, no forward or re-send leaves, new orders and amends are refused."""
        last = self.machine.core.outbox.last.get(i, 0)
        if have <= last:
            return False
        if self.handler.halted is None:
            self.handler.halted = (
                f"engine shard {i} has forwards from account shard {self.cfg.index} up to seq "
                f"{have}, its chain to it ends at {last}: forward chains rebuilt under another "
                "routing (was the data written with another --shards?)"
            )
            log.error("ALERT account shard %d halted: %s", self.cfg.index, self.handler.halted)
        return True

    def confirmed(self, i: int, have: int) -> None:
        """Engine shard ``i`` has applied every forward up to ``have``: they are no longer
        pending; below half the cap its symbols take new orders again."""
        pending = self.unconfirmed.get(i)
        if pending is None:
            return
        while pending and pending[0] <= have:
            pending.popleft()
        full = self.handler.full
        if i in full and len(pending) < self.cfg.max_unconfirmed // 2:
            full.discard(i)
            log.warning("engine shard %d caught up (%d forwards pending): orders taken again",
                        i, len(pending))  # fmt: skip

    def _journal_forwards(self, i: int, have: int) -> list[tuple]:
        """Forwards to engine shard ``i`` after ``have`` that the ring no longer holds (an
        engine shard down for long), regenerated from the journal: bounded work per HAVE, the
        cursor kept for the next one. Without them the holds of those orders would stay."""
        journal = self.handler.journal
        if not isinstance(journal, Journal):
            log.error("ALERT engine shard %d needs forwards after seq %d that the ring no "
                      "longer holds, and this account shard has no journal", i, have)  # fmt: skip
            return []
        repair = self.repairs.get(i)
        if repair is None:
            repair = self.repairs[i] = ForwardRepair(i, journal.replay_from)
        try:
            msgs = repair.take(have, JOURNAL_READ_BUDGET, MAX_FORWARD_RESEND)
        except JournalError as exc:
            self.repairs.pop(i, None)
            log.error("ALERT engine shard %d needs forwards after seq %d: %s", i, have, exc)
            return []
        self.counts["journal"] += len(msgs)
        return msgs

    def publish(self, events: list[tuple]) -> None:
        """Every event of a committed batch, in seq order, on the PUB (the bridge keeps the
        balance changes; it needs every seq to see that nothing is missing). PUB never blocks:
        a dropped message is a hole the bridge repairs from the ring."""
        self.published = events[-1][1]
        if self.pub is None:
            return
        # a replicated leader stamps its epoch (the bridge drops a deposed one's)
        epoch = self.replica.epoch if self.replica is not None else None
        for k in range(0, len(events), 1000):
            try:
                self.pub.send_multipart(
                    [b"accounts", encode_events(self.cfg.index, events[k : k + 1000], epoch)],
                    self.zmq.NOBLOCK,
                )
            except self.zmq.Again:
                self.counts["unpublished"] += 1

    def _send_fwd(self, i: int, fwds: list[tuple]) -> None:
        try:
            send_frames(self.engines[i], [LINK_FWD, packb((self.cfg.index, fwds))])
        except self.zmq.ZMQError:  # engine down or pipe full: its HAVE makes us re-send
            self.counts["unsent"] += len(fwds)

    def housekeeping(self, now: float) -> None:
        journal = self.handler.journal
        if self.handler.journal_down is not None or not isinstance(journal, Journal):
            return
        cfg = self.cfg
        if journal.records_written - self.last_snap_records >= cfg.snapshot_every or (
            self.machine.seq != self.last_snap_seq and now - self.last_snap >= cfg.snapshot_interval
        ):
            self.snapshot(now)

    def snapshot(self, now: float) -> None:
        """Snapshot the machine (periodic, and at a clean stop); a failure is an ALERT, retried
        at the next interval."""
        journal = self.handler.journal
        if not isinstance(journal, Journal):
            return
        t = time.monotonic()
        self.last_snap = now
        try:
            path = journal.snapshot(self.machine)  # type: ignore[arg-type]
        except (JournalUnavailable, OSError) as exc:
            log.error("ALERT snapshot of account shard %d failed (%s)", self.cfg.index, exc)
            return
        log.info("snapshot %s of account shard %d in %.1f ms", path.name, self.cfg.index,
                 (time.monotonic() - t) * 1000)  # fmt: skip
        self.last_snap_seq = self.machine.seq
        self.last_snap_records = journal.records_written

    def close(self) -> None:
        durable = isinstance(self.handler.journal, Journal)
        if durable and self.handler.journal_down is None and self.machine.seq != self.last_snap_seq:
            # a clean stop (SIGTERM/SIGINT): the next start loads this instead of replaying
            log.info("account shard %d stopping: snapshot at seq %d", self.cfg.index,
                     self.machine.seq)  # fmt: skip
            self.snapshot(time.monotonic())
        if self.replica is not None:
            self.replica.close()
        try:
            self.handler.journal.close()
        except OSError as exc:
            log.error("closing the journal of account shard %d failed: %s", self.cfg.index, exc)
        for link in self.links:
            link.sock.close(0)
        for d in self.engines:
            d.close(0)
        for sock in (self.pub, self.direct):
            if sock is not None:
                sock.close(0)
        if self.zap is not None:
            self.zap.close()
        self.ctx.term()
        log.info("account shard %d stopped", self.cfg.index)


class _Collector:
    """Prometheus: the account shard's counters and gauges."""

    def __init__(self, node: AccountNode) -> None:
        self.node = node

    def collect(self) -> Any:
        node = self.node
        core = node.machine.core
        lab = [str(node.cfg.index)]
        fam = CounterMetricFamily(
            "shardex_accounts_link", "Engine link messages by kind", labels=["shard", "what"]
        )
        for what, n in node.counts.items():
            fam.add_metric([*lab, what], n)
        yield fam
        # replies (acks of holds among them) that the router link could not take: counted,
        # never silent; the order's fate stays queryable on its engine shard (OP_ORDER)
        yield from outbox_families(
            node.links, lab,
            ("shardex_accounts_replies_dropped",
             "Reply batches the router link could not take (its outbox full, or the router gone)"),
            ("shardex_accounts_outbox", "Reply batches waiting for a full pipe"),
        )  # fmt: skip
        for name, doc, value in (
            ("shardex_accounts_commands", "Commands journaled and applied", node.handler.commands),
            ("shardex_accounts_rejected", "Client commands refused (funds, shape, key)",
             node.handler.rejected),
            ("shardex_accounts_anomalies", "Settlements that did not fit (ALERT)", core.anomalies),
            ("shardex_accounts_journal_resent", "Events re-sent to the bridge from the journal "
             "(older than the ring)", node.handler.journal_resent),
            ("shardex_accounts_internal_errors", "Requests that hit a bug (ALERT)",
             node.handler.internal_errors),
            ("shardex_accounts_shed", "Commands refused overloaded (an engine shard's link "
             "backed up)", node.handler.shed),
        ):  # fmt: skip
            fam = CounterMetricFamily(name, doc, labels=["shard"])
            fam.add_metric(lab, value)
            yield fam
        for name, doc, value in (
            ("shardex_accounts_seq", "Last event seq", core.seq),
            ("shardex_accounts_open_orders", "Orders holding funds", len(core.orders)),
            ("shardex_accounts_unconfirmed", "Forwards not yet confirmed by the engine shards",
             sum(len(q) for q in node.unconfirmed.values())),
            ("shardex_accounts_accounts", "Accounts with a balance", len(core.balances)),
            ("shardex_accounts_journal_up", "1 while the journal can write",
             0 if node.handler.journal_down else 1),
        ):  # fmt: skip
            fam = GaugeMetricFamily(name, doc, labels=["shard"])
            fam.add_metric(lab, value)
            yield fam
        if node.replica is not None:  # a replicated leader (issue 15)
            yield from replica_families(node.replica, node.refused, lab,
                                        "shardex_accounts_replica")  # fmt: skip


def run_accounts(cfg: AccountsConfig) -> None:
    """The account shard's process: returns on SIGTERM/SIGINT."""
    node = AccountNode(cfg)
    node.stop = StopFlag.install()
    node.run()
    exit_now()  # stopped cleanly: skip the heap's teardown


def run_replicated_accounts(cfg: AccountsConfig, replica: int, redis_url: str,
                            repl_endpoint: str, repl_advertised: str | None = None) -> None:
    """``shardex accounts --role auto``: account shard J as one of two replicas, the same
    standby phase and lease rules as an engine shard's (``failover.run_failover``), then an
    ``AccountNode`` that ships each group commit and releases forwards, replies and balance
    events only at the high watermark (see ``AccountNode.flush``)."""
    n = cfg.engines
    factory = AccountMachineFactory(cfg.index, cfg.shards, lambda s: shard_for(s, n), engines=n)

    def build(p: Promotion, replicate: Callable[[Any, Any], Replicator]) -> AccountNode:
        return AccountNode(cfg, recovered=(p.engine, p.journal), replicate=replicate)

    run_failover(cfg, "accounts", replica, redis_url, repl_endpoint, repl_advertised,
                 f"account shard {cfg.index}", build, factory,
                 lambda machine: machine.core.check_integrity(),
                 reserve=(cfg.pub, repl_endpoint))  # fmt: skip


__all__ = [
    "AccountHandler",
    "AccountNode",
    "AccountsConfig",
    "run_accounts",
    "run_replicated_accounts",
]

"""``AccountHandler``: everything an account shard does per request, without sockets or
clocks (decode a client request, check the key, turn it into ``AccountCore`` commands, journal
them, build the reply; the reads, the bridge's range repairs). ``accounts.AccountNode`` is the
loop around it."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from shardex.accounts import implementation
from shardex.accounts.assets import MAX_UNITS
from shardex.accounts.codes import (
    A_DEPOSIT,
    A_WITHDRAW,
    AE_BALANCE,
    AE_REJECTED,
    AE_REPEATED,
    REJ_UNKNOWN_ASSET,
    reject_name,
)
from shardex.accounts.machines import AccountMachine
from shardex.accounts.orders import account_orders, held_rows
from shardex.accounts.routing import place_command
from shardex.amounts import parse_decimal
from shardex.auth import (
    KeyInfo,
    Registry,
)
from shardex.engine.book import IntegrityError
from shardex.engine.codes import (
    EV_REJECTED,
    OP_AMEND,
    OP_MARGIN,
    OP_NEW,
    REJ_MALFORMED,
    REJ_NOT_ALLOWED,
    REJ_OFF_GRID,
    REJ_OUT_OF_RANGE,
    REJ_UNKNOWN_OP,
)
from shardex.journal import Journal, JournalError
from shardex.node.account_margin import margin_of
from shardex.node.account_routing import place_write
from shardex.node.admission import UNKNOWN_KEY_REPLY, admit
from shardex.node.fee_service import fee_read
from shardex.node.nulljournal import NullJournal
from shardex.node.order_service import order
from shardex.node.restrict_service import ACCOUNT_ADMIN
from shardex.node.ring import JOURNAL_READ_BUDGET
from shardex.timemarks import stamp
from shardex.wire.codes import MALFORMED, NOT_ALLOWED, UNKNOWN_OP, WRONG_SHARD
from shardex.wire.errors import bad_events_read, events_gone, read_error
from shardex.wire.layouts import (
    AE_KIND,
    AREJ_CODE,
    AREJ_REASON,
    AUDIT_OFFSET,
    BALANCE_AVAILABLE,
    BALANCE_HELD,
    CMD_ID,
    CMD_OP,
    CMD_SYMBOL,
    ORDER_SYMBOL,
    READ_ACCOUNT,
    XFER_ACCOUNT,
)
from shardex.wire.protocol import (
    ERR_OVERLOADED,
    MAX_ID_LEN,
    OP_AUDIT,
    OP_BALANCE,
    OP_DEPOSIT,
    OP_EVENTS,
    OP_FEES,
    OP_ORDER,
    OP_PLACE,
    OP_STATUS,
    OP_WITHDRAW,
    decode_request,
    encode_reply,
    halted_error,
    internal_error,
    internal_op_refusal,
    journal_error,
    quote,
    too_many_reads_error,
)

log = logging.getLogger("shardex.accounts")

MAX_EVENTS_REPLY = 5_000  # events per OP_EVENTS answer (the bridge asks again from there)
MAX_READS = 256  # balance/status/audit reads in one request (their replies are not small)
_UNKNOWN_KEY = UNKNOWN_KEY_REPLY
# ops a client may send on the direct port (``AccountHandler.for_clients``)
_CLIENT_OPS = frozenset((OP_NEW, OP_AMEND, OP_ORDER, OP_BALANCE, OP_DEPOSIT, OP_WITHDRAW, OP_AUDIT,
                         OP_FEES, *ACCOUNT_ADMIN))  # fmt: skip
_OVERLOADED = encode_reply(None, ERR_OVERLOADED)
_CANCEL_HERE = (
    "cancels go straight to the engine shard (routing key: the symbol), not to an account shard"
)


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
        # exchange time: the node's clock in ms (None: no stamping), read at the first write
        # of each batch (``stamp_due``, set again by the node's group commit: ``new_batch``)
        self.wall: Callable[[], int] | None = None
        self.stamp_due = False
        self.place_due: Any = None  # a map to journal before the next write (``routing.due``)
        # what applies a journaled command: the machine, or the core itself while a request
        # of orders only is held (``_orders``: the machine takes their events once, after it)
        self.applier: Any = machine

    def journal_apply(self, cmd: tuple, out: list[tuple]) -> int:
        """Journal and apply one core command; returns where its events start in ``out``."""
        if self.stamp_due:
            self.stamp_due = False
            stamp(self.machine, self.journal, self.wall)  # type: ignore[arg-type]
        if self.place_due is not None:  # (journaled first; applied by the machine: no event)
            due, self.place_due = self.place_due, None
            place = place_command(due)
            self.journal.add(self.machine.seq, place)
            self.machine.apply(place, out)
            self.commands += 1
        start = len(out)
        applier = self.applier
        self.journal.add(applier.seq, cmd)
        applier.apply(cmd, out)
        self.commands += 1
        return start

    def new_batch(self) -> None:
        """A group commit ended the batch: the next write reads the time again."""
        self.stamp_due = self.wall is not None

    def handle(self, payload: bytes, out: list[tuple], user: str | None = None) -> bytes:
        """One client request → its reply. Never raises: the core's contract is that bad
        input is refused before anything changes; if a bug breaks it anyway, the process must
        survive (ALERT, counted, an error reply), as the engine shard's ``handle`` does."""
        try:
            return self._handle(payload, out, user)
        except Exception as exc:
            return self._internal_error(exc)

    def _to_full(self, cmd: Any) -> bool:
        """Whether ``cmd`` is a new order, amend or margin move (both forwarded the same way)
        for a symbol of a backed-up engine shard."""
        if _op(cmd) not in (OP_NEW, OP_AMEND, OP_MARGIN):
            return False
        symbol = _at(cmd, CMD_SYMBOL)
        return (
            type(symbol) is str
            and symbol in self.table.pairs
            and self.core.engine_for(symbol) in self.full
        )

    def _internal_error(self, exc: Exception) -> bytes:
        self.internal_errors += 1
        log.exception("ALERT internal error while handling a request on an account shard")
        return encode_reply(None, internal_error(exc))

    def _handle(self, payload: bytes, out: list[tuple], user: str | None) -> bytes:
        key, cmds, refused = admit(self.registry, payload, user)
        if refused is not None:
            if refused is not _UNKNOWN_KEY:
                self.key = key
            return refused
        self.key = key
        reads = (OP_STATUS, OP_BALANCE, OP_AUDIT, OP_ORDER, OP_FEES)
        ops = [c[CMD_OP] if type(c) is tuple and c else None for c in cmds]  # (``_op``, inline)
        n_reads = n_audits = n_other = 0
        for op, c in zip(ops, cmds, strict=True):
            if op in reads:
                n_reads += 1
                # (an order listing scans every order of the shard, as an audit does)
                n_audits += op == OP_AUDIT or (op == OP_ORDER and len(c) == 2)
            elif op != OP_NEW and op != OP_AMEND:
                n_other += 1
        if n_reads > MAX_READS or n_audits > 1:
            # refused before any work: 200,000 audits in a 400 KB frame made a 36 MB reply
            # and a 5.5 s stall of the shard (an audit walks every account and order)
            return encode_reply(None, too_many_reads_error(n_reads, n_audits, MAX_READS))
        if self.journal_down is not None and any(op not in reads for op in ops):
            return encode_reply(None, journal_error(self.journal_down))
        if self.halted is not None and any(op in (OP_NEW, OP_AMEND) for op in ops):
            return encode_reply(None, halted_error(self.halted))
        if self.full and any(self._to_full(c) for c in cmds):
            # nothing of the request is journaled or held: the client knows it did not run
            self.shed += len(cmds)
            return _OVERLOADED
        if not n_reads and not n_other:
            return encode_reply(self._orders(cmds, out))
        results = []
        for op, cmd in zip(ops, cmds, strict=True):
            if op in (OP_NEW, OP_AMEND):  # (first: most of a busy shard's commands)
                results.append(order(self, cmd, out))
            elif op == OP_STATUS:
                results.append(self.status())
            elif op == OP_BALANCE:
                results.append(self.balance(cmd))
            elif op == OP_AUDIT:
                results.append(self.audit() if len(cmd) == 1 else self.audit_page(cmd))
            elif op == OP_ORDER:
                results.append(self.held(cmd) if len(cmd) != 2 else self.open_orders(cmd))
            elif op in (OP_DEPOSIT, OP_WITHDRAW):
                results.append(self.transfer(cmd, out))
            elif op == OP_FEES:
                results.append(fee_read(self, cmd))
            elif type(op) is int and op in ACCOUNT_ADMIN:  # (a fee group, a restriction)
                results.append(ACCOUNT_ADMIN[op](self, cmd, out))
            elif op == OP_PLACE:
                results.append(place_write(self, cmd, out))
            else:
                reason = _CANCEL_HERE if op == 2 else f"unknown op {quote(op)} for an account shard"
                results.append([self._rej(cmd, reason, REJ_UNKNOWN_OP)])
        return encode_reply(results)

    # -- writes ---------------------------------------------------------------------------------

    def _orders(self, cmds: list[Any], out: list[tuple]) -> list[list[tuple]]:
        """A request of new orders and amends only: each held as ``order`` holds it, applied
        by the core itself; the machine takes their events into its event and forward rings
        once, after the last (``AccountMachine.absorb``), not once per order. Same journal,
        events and replies as one command at a time, at ~3 fewer calls per order."""
        first = len(out)
        self.applier = self.core
        try:
            return [order(self, cmd, out) for cmd in cmds]
        finally:  # (even after a bug's exception: what the core emitted is in the rings)
            self.applier = self.machine
            self.machine.absorb(out, first)

    def _rej(self, cmd: Any, reason: str, code: int) -> tuple:
        self.rejected += 1
        sym = _at(cmd, CMD_SYMBOL)
        oid = _at(cmd, CMD_ID)
        return (
            EV_REJECTED,
            self.machine.seq,
            sym if type(sym) is str and len(sym) <= 32 else "",
            oid if type(oid) is str and len(oid) <= 64 else "",
            reason,
            code,
        )

    def transfer(self, cmd: tuple, out: list[tuple]) -> dict[str, Any]:
        """Deposit/withdraw (admin keys only): a map, ``{"ok": True, ...balance}`` or
        ``{"rejected": reason, "code": name}``."""
        if len(cmd) != 5 or not all(type(v) is str for v in cmd[XFER_ACCOUNT:]):
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
        start = self.journal_apply((a, account, asset, units, ref), out)
        for ev in out[start:]:
            kind = ev[AE_KIND]
            if kind == AE_REJECTED:
                return self._map_rej(ev[AREJ_REASON], ev[AREJ_CODE])
            if kind == AE_REPEATED:
                avail, held = self.core.balance(account, asset)
                return self._balance_map(account, asset, avail, held, repeated=True)
            if kind == AE_BALANCE:
                return self._balance_map(account, asset, ev[BALANCE_AVAILABLE], ev[BALANCE_HELD])
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

    def _reads_all(self) -> bool:
        """Whether this request's key may read every account (admin, reader, or no keys)."""
        return self.key is None or self.key.role in ("admin", "reader")

    def _reads_for(self, account: str) -> bool:
        """Whether this request's key may read ``account`` (its own, or every account)."""
        return self._reads_all() or self.key is not None and self.key.may_act_for(account)

    def _may_read_account(self, account: str) -> dict[str, Any] | None:
        """The refusal of a read of ``account``'s books (the key may not, or the account is
        another shard's), else None."""
        if not self._reads_for(account):
            return _not_allowed(account)
        if not self.core.owns(account):
            return read_error(WRONG_SHARD, f"account {account[:64]} is not on account shard "
                              f"{self.core.shard}", shard=self.core.shard)  # fmt: skip
        return None

    def balance(self, cmd: tuple) -> dict[str, Any]:
        account = _at(cmd, READ_ACCOUNT)
        if len(cmd) != 2 or type(account) is not str or not 0 < len(account) <= MAX_ID_LEN:
            # (the answer names the account: a 1 MiB name would be echoed whole)
            return read_error(
                MALFORMED, f"balance: expected (op, account of 1..{MAX_ID_LEN} chars)"
            )
        refused = self._may_read_account(account)
        if refused is not None:
            return refused
        fmt = self.table.fixed  # every balance of an asset at its precision: columns line up
        cells = self.core.balances.get(account, {})
        return {
            "account": account,
            "shard": self.core.shard,
            "balances": {
                a: [fmt(a, avail), fmt(a, held)] for a, (avail, held) in sorted(cells.items())
            },  # fmt: skip
            "orders": self.core.open_count(account),
            "seq": self.core.seq,
            "margin": margin_of(self.core, account),
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
        if len(cmd) != 4 or not all(type(v) is str for v in cmd[ORDER_SYMBOL:]):
            return read_error(MALFORMED, "order: expected (op, symbol, account, id)")
        _, symbol, account, oid = cmd
        if not self._reads_for(account):
            return _not_allowed(account)
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
        _, account = cmd
        if type(account) is not str or not 0 < len(account) <= MAX_ID_LEN:
            return read_error(MALFORMED, f"orders: expected (op, account of 1..{MAX_ID_LEN} chars)")
        refused = self._may_read_account(account)
        if refused is not None:
            return refused
        core = self.core
        return {**account_orders(core.open_by, account, self.table), "seq": core.seq}

    def audit_page(self, cmd: tuple) -> dict[str, Any]:
        """``(OP_AUDIT, offset)``: a page of every order this shard holds funds for, in
        integer units (``shardex.accounts.orders``), for the per-order audit."""
        if not self._reads_all():
            return read_error(NOT_ALLOWED, "audit: not allowed for this key")
        offset = cmd[AUDIT_OFFSET]
        if type(offset) is not int or offset < 0:
            return read_error(MALFORMED, "audit: expected (op, offset >= 0)")
        core = self.core
        return {"shard": core.shard, "seq": core.seq, "total": len(core.orders),
                "orders": held_rows(core.open_by, offset)}  # fmt: skip

    def audit(self) -> dict[str, Any]:
        """This shard's books, in integer units, for a cluster-wide conservation check (the
        inflows by trade of all account shards sum to zero), and its own integrity check."""
        if not self._reads_all():
            return read_error(NOT_ALLOWED, "audit: not allowed for this key")
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
            "rebates": dict(core.rebates),
            "deposited": dict(core.deposited),
            "withdrawn": dict(core.withdrawn),
            "flow": dict(core.flow),
            "open_orders": len(core.orders),
            "anomalies": core.anomalies,
            "integrity": integrity,
            **core.margin_audit(),  # (perp margin: ``accounts.margin``)
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
                return encode_reply([read_error(NOT_ALLOWED, "events: not allowed for this key")])
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
                results.append(read_error(UNKNOWN_OP, f"op {quote(op)} is not served on the "
                                          "direct port"))  # fmt: skip
        return encode_reply(results)

    def events(self, cmd: tuple, published: int) -> dict[str, Any]:
        if len(cmd) != 3:
            return bad_events_read()
        _, first, last = cmd
        if type(first) is not int or type(last) is not int or not 0 < first <= last:
            return bad_events_read()
        last = min(last, first + MAX_EVENTS_REPLY - 1, published)
        if first > last:
            return {"events": [], "seq": published}
        evs = self.machine.events.get(first, last)
        runs = self.machine.times.runs(first, last) if evs is not None else None
        if runs is None and isinstance(self.journal, Journal):
            # Older than the ring: regenerated from the journal (replay is deterministic, so
            # the events are the ones published), bounded work per request with the cursor
            # kept between requests, as the engine shard's range re-send does.
            try:
                evs = self.journal.events(first, last, JOURNAL_READ_BUDGET)
            except JournalError as exc:
                return {**events_gone(first, last, str(exc)), "seq": published}
            if evs == []:  # still replaying towards ``first``: ask again
                return {"events": [], "seq": published, "pending": True}
            runs = self.journal.event_times(first, last)
            self.journal_resent += len(evs)
        if evs is None:
            ring = self.machine.events.first
            why = f"events {first}..{last} are gone (ring starts at {ring}, no journal)"
            return {**events_gone(first, last, why), "seq": published}
        return {"events": evs, "seq": published, "ts": runs or [[first, self.machine.ts]]}

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
            "core": implementation(),  # "compiled" (mypyc build) or "interpreted"
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


def _not_allowed(account: str) -> dict[str, Any]:
    return read_error(NOT_ALLOWED, f"account {account[:64]} not allowed for this key")


def _op(cmd: Any) -> Any:
    return cmd[CMD_OP] if type(cmd) is tuple and cmd else None


def _at(cmd: Any, i: int) -> Any:
    try:
        return cmd[i]
    except Exception:
        return None


def _decimal(raw: Any) -> Decimal | None:
    """An amount or budget: a plain, unsigned ASCII decimal (``shardex.amounts``), else None."""
    return parse_decimal(raw)

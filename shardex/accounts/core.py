"""The account shard's state machine: balances, holds before matching, settlement after it.

Pure like ``shardex.engine``: no sockets, no clock, no I/O, no randomness. One ``AccountCore`` is
account shard J of M: it owns the accounts with ``crc32(account) % M == J`` and is their single
writer. Commands in (tuples, see ``shardex.accounts.codes``), events out, one seq. The same
commands give the same events, so the process around it can journal its inputs, snapshot, and
recover by replay exactly as an engine shard does.

Money rules (what a risk officer checks):

* Amounts are integer units of each asset (``shardex.accounts.assets``); no float anywhere.
* A new order holds, before it is forwarded to its engine shard, the most it can ever cost:
  a buy ``cap × qty`` of quote (``cap``: its limit price; for a market buy the highest price its
  budget pays for all of ``qty``) plus the fee at the taker rate; a sell ``qty`` of base.
* Per order the fee charged so far is ``ceil(Σ notional_i × bps_i / 10000)`` (taker or maker rate
  per fill): rounded up, so the venue never under-collects, and cumulative, so the sum of the
  fills' fees never exceeds the fee that was held. Sellers pay their fee out of the proceeds.
* After each settlement an order's hold is recomputed as exactly what its open remainder can
  still cost (``required``); the difference (price improvement, fee slack) goes back to
  ``available``. ``check_integrity`` proves held == Σ required and the conservation identity.
* Validate before mutate: a command that does not fit changes nothing and yields one
  ``rejected`` (client command) or ``anomaly`` (settlement) event. No input raises.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from shardex.accounts.assets import MAX_UNITS, AssetTable, Fee, Pair
from shardex.accounts.codes import (
    A_AMEND,
    A_DEPOSIT,
    A_NEW,
    A_WITHDRAW,
    AE_ANOMALY,
    AE_BALANCE,
    AE_FEES,
    AE_FORWARD,
    AE_GAP,
    AE_REJECTED,
    AE_REPEATED,
    REJ_DUPLICATE_REF,
    REJ_INSUFFICIENT_FUNDS,
    REJ_UNKNOWN_ASSET,
    S_AMENDED,
    S_CANCELLED,
    S_REJECTED,
    S_TRADE,
)
from shardex.accounts.link import APPLY, DUPLICATE, Inbox, Outbox
from shardex.engine.book import IntegrityError
from shardex.engine.codes import (
    BUY,
    FOK,
    IOC,
    LIMIT,
    MAX_ID_LEN,
    OP_AMEND,
    OP_NEW,
    REJ_DUPLICATE_ID,
    REJ_INVALID,
    REJ_MALFORMED,
    REJ_NOT_LIVE,
    REJ_OUT_OF_RANGE,
    REJ_UNKNOWN_OP,
    REJ_UNKNOWN_SYMBOL,
    REJ_WRONG_SHARD,
    SELL,
)
from shardex.engine.markets import Market

MAX_REASON_LEN = 200
_BPS = 10_000
# Transfer refs remembered for idempotency (the dedup window): the newest REF_WINDOW, oldest
# evicted first. Within it a retried deposit/withdraw is acknowledged again (AE_REPEATED) and a
# ref reused for another transfer is refused (duplicate_ref); a ref older than the window is a
# new transfer. 100,000 is ~2.8 h of admin transfers at 10/s (a client retries within seconds);
# ~25 MB of memory and ~5 MB of snapshot at most.
REF_WINDOW = 100_000


def account_shard_for(account: str, shards: int) -> int:
    """The account shard that owns ``account``: crc32 modulo M (the style of
    ``shardex.wire.protocol.shard_for``; stable across processes and hosts)."""
    return zlib.crc32(account.encode()) % shards


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class HeldOrder:
    """What an account shard knows of one of its open orders (from hold to end).

    ``price`` is the engine's limit price as last settled (None for a market sell); ``cap`` the
    price a buy's hold is computed at: its price, or higher while an amend that raised the price
    is in flight (``pending`` amends not yet settled). ``fee_num`` is Σ notional × bps of the
    fills so far, ``fee_charged`` = ceil(fee_num / 10000) already paid.
    """

    __slots__ = (
        "symbol",
        "side",
        "price",
        "cap",
        "rem",
        "held",
        "fee_num",
        "fee_charged",
        "maker_bps",
        "taker_bps",
        "pending",
        "opened",
    )

    def __init__(
        self,
        symbol: str,
        side: int,
        price: int | None,
        cap: int,
        rem: int,
        held: int,
        fee_num: int,
        fee_charged: int,
        maker_bps: int,
        taker_bps: int,
        pending: int,
        opened: int,
    ) -> None:
        self.symbol = symbol
        self.side = side
        self.price = price
        self.cap = cap
        self.rem = rem
        self.held = held
        self.fee_num = fee_num
        self.fee_charged = fee_charged
        self.maker_bps = maker_bps
        self.taker_bps = taker_bps
        self.pending = pending
        self.opened = opened  # this shard's seq of the forward that placed it (see _refused)

    def as_tuple(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)


def required(o: HeldOrder, pair: Pair) -> int:
    """What the open remainder of ``o`` can still cost, in units of the held asset.

    Buy: ``cap × rem`` of quote plus the fee still chargeable if all of it fills at the cap as
    taker: ``ceil((fee_num + cap·rem·bps_taker) / 10000) - fee_charged``. This never grows with
    a fill (a fill moves notional at a price <= cap and a rate <= taker's out of the bound), so
    a hold once taken always covers the order. Sell: ``rem`` lots of base.
    """
    if o.side == BUY:
        rc = o.cap * o.rem * pair.quote_per_tick_lot
        return rc + _ceil_div(o.fee_num + rc * o.taker_bps, _BPS) - o.fee_charged
    return o.rem * pair.base_per_lot


class AccountCore:
    """Account shard ``shard`` of ``shards``. Not thread-safe by design: one writer calls it."""

    def __init__(
        self,
        markets: Mapping[str, Market],
        shard: int = 0,
        shards: int = 1,
        fees: Mapping[str, Fee] | None = None,
        engine_for: Callable[[str], int] | None = None,
        seq: int = 0,
        ref_window: int = REF_WINDOW,
    ) -> None:
        if type(shards) is not int or shards < 1 or type(shard) is not int:
            raise ValueError(f"shards must be an int >= 1, got {shards!r}")
        if type(ref_window) is not int or ref_window < 1:
            raise ValueError(f"ref_window must be an int >= 1, got {ref_window!r}")
        if not 0 <= shard < shards:
            raise ValueError(f"shard must be in 0..{shards - 1}, got {shard!r}")
        self.shard = shard
        self.shards = shards
        self.table = AssetTable(markets, fees)
        # Symbol → engine shard. Default: one engine shard. The process passes the cluster's
        # routing function (``lambda s: shard_for(s, N)``), kept out of the snapshot because it
        # is configuration, like the market table.
        self.engine_for: Callable[[str], int] = engine_for or (lambda _symbol: 0)
        self.seq = seq
        self.balances: dict[str, dict[str, list[int]]] = {}  # account → asset → [avail, held]
        self.orders: dict[tuple[str, str, str], HeldOrder] = {}  # (account, symbol, id)
        self.fees: dict[str, int] = {}  # the shard's fee ledger, per asset
        self.deposited: dict[str, int] = {}
        self.withdrawn: dict[str, int] = {}
        self.flow: dict[str, int] = {}  # net inflow by trades (Σ over all shards is 0)
        # transfer ref → (op, account, asset, amount), oldest first; at most ``ref_window``
        # (state: in snapshots, so a replay evicts exactly what the live run evicted)
        self.refs: OrderedDict[str, tuple] = OrderedDict()
        self.ref_window = ref_window
        self.inbox = Inbox()  # settlements: last engine seq applied per engine shard
        self.outbox = Outbox()  # forwards: last own seq sent per engine shard
        # counters (metrics; not part of snapshots)
        self.duplicates = 0
        self.gaps = 0
        self.anomalies = 0

    # ------------------------------------------------------------------ public API

    def apply(self, cmd: Any, out: list[tuple]) -> None:
        """Apply one command or settlement, appending its events to ``out``. Never raises on
        input: every shape problem is found before anything changes."""
        try:
            op = cmd[0]
        except Exception:
            return self._reject("", "", "malformed command", REJ_MALFORMED, out)
        try:
            if op in (S_TRADE, S_CANCELLED, S_REJECTED, S_AMENDED):
                return self._settle(cmd, out)
            if op == A_NEW:
                return self._new(cmd, out)
            if op == A_AMEND:
                return self._amend(cmd, out)
            if op in (A_DEPOSIT, A_WITHDRAW):
                return self._transfer(cmd, out)
            return self._reject(_f(cmd, 3), "", f"unknown op {_q(op, 20)}", REJ_UNKNOWN_OP, out)
        except (TypeError, ValueError, IndexError, KeyError, AttributeError, OverflowError):
            # Only shape checks can raise, and they all run before the first mutation.
            return self._reject(_f(cmd, 3), "", "malformed command", REJ_MALFORMED, out)

    def apply_many(self, cmds: Any) -> list[tuple]:
        out: list[tuple] = []
        for cmd in cmds:
            self.apply(cmd, out)
        return out

    def owns(self, account: object) -> bool:
        return type(account) is str and account_shard_for(account, self.shards) == self.shard

    def balance(self, account: str, asset: str) -> tuple[int, int]:
        """(available, held) in units; (0, 0) for an account or asset never seen."""
        cell = self.balances.get(account, {}).get(asset)
        return (cell[0], cell[1]) if cell else (0, 0)

    # ------------------------------------------------------------------ transfers

    def _transfer(self, cmd: Any, out: list[tuple]) -> None:
        if len(cmd) != 5:
            return self._reject(
                _f(cmd, 1), _f(cmd, 4), "transfer: expected 5 fields", REJ_MALFORMED, out
            )
        op, account, asset, amount, ref = cmd
        what = "deposit" if op == A_DEPOSIT else "withdraw"
        if not _ident(account) or not _ident(ref):
            return self._reject(
                account,
                ref,
                f"account and ref must be strings of 1..{MAX_ID_LEN} chars",
                REJ_MALFORMED,
                out,
            )
        if not self.owns(account):
            return self._reject(
                account,
                ref,
                f"account {account} belongs to account shard "
                f"{account_shard_for(account, self.shards)}",
                REJ_WRONG_SHARD,
                out,
            )
        if type(asset) is not str or asset not in self.table.units:
            return self._reject(
                account, ref, f"unknown asset {_q(asset, 40)}", REJ_UNKNOWN_ASSET, out
            )
        if type(amount) is not int:
            return self._reject(
                account, ref, "amount must be an integer number of units", REJ_MALFORMED, out
            )
        if amount <= 0:
            return self._reject(account, ref, f"{what} amount must be > 0", REJ_OUT_OF_RANGE, out)
        seen = self.refs.get(ref)
        if seen is not None:
            if seen == (op, account, asset, amount):
                self.seq += 1
                out.append((AE_REPEATED, self.seq, account, ref))
                return None
            return self._reject(
                account, ref, f"ref {ref} was used by another transfer", REJ_DUPLICATE_REF, out
            )
        cell = self._cell(account, asset, create=False)
        avail = cell[0] if cell else 0
        if op == A_DEPOSIT:
            total = self._total(asset)
            if total + amount > MAX_UNITS:
                return self._reject(
                    account,
                    ref,
                    f"deposit would take this shard's {asset} "
                    f"above {self.table.fmt(asset, MAX_UNITS)}",
                    REJ_OUT_OF_RANGE,
                    out,
                )
            cell = self._cell(account, asset)
            cell[0] += amount
            self.deposited[asset] = self.deposited.get(asset, 0) + amount
        else:
            if amount > avail:
                return self._insufficient(account, ref, asset, avail, amount, out)
            cell = self._cell(account, asset)
            cell[0] -= amount
            self.withdrawn[asset] = self.withdrawn.get(asset, 0) + amount
        self._remember(ref, (op, account, asset, amount))
        self._bal(out, account, asset, what, ref)
        return None

    def _remember(self, ref: str, transfer: tuple) -> None:
        """Keep ``ref`` in the dedup window, evicting the oldest refs beyond ``ref_window``
        (count-based: the core has no clock). An evicted ref, sent again, is a new transfer."""
        refs = self.refs
        refs[ref] = transfer
        while len(refs) > self.ref_window:
            refs.popitem(last=False)

    # ------------------------------------------------------------------ orders

    def _new(self, cmd: Any, out: list[tuple]) -> None:
        if len(cmd) != 12:
            return self._reject(
                _f(cmd, 3), _f(cmd, 2), "new: expected 12 fields", REJ_MALFORMED, out
            )
        _, symbol, oid, account, side, otype, price, qty, tif, post_only, stp, budget = cmd
        refused = self._order_gate(symbol, oid, account)
        if refused:
            return self._reject(account, oid, *refused, out)
        pair = self.table.pairs[symbol]
        if (account, symbol, oid) in self.orders:
            return self._reject(
                account,
                oid,
                f"duplicate id {oid}: an open order of {account} has it",
                REJ_DUPLICATE_ID,
                out,
            )
        for what, value in (("side", side), ("type", otype)):
            if type(value) is not int or value not in (0, 1):
                code = REJ_INVALID if type(value) is int else REJ_MALFORMED
                return self._reject(account, oid, f"unknown {what} {_q(value, 20)}", code, out)
        if type(qty) is not int:
            return self._reject(
                account, oid, "qty must be an integer number of lots", REJ_MALFORMED, out
            )
        if not 0 < qty <= pair.max_qty_lots:
            return self._reject(account, oid, "qty out of range", REJ_OUT_OF_RANGE, out)
        fwd_type, cap = otype, price
        if otype == LIMIT:
            if type(price) is not int:
                return self._reject(
                    account, oid, "limit order needs an integer price in ticks", REJ_MALFORMED, out
                )
            if not 0 < price <= pair.max_price_ticks:
                return self._reject(account, oid, "price out of range", REJ_OUT_OF_RANGE, out)
            if budget is not None:
                return self._reject(
                    account, oid, "only a market buy carries a budget", REJ_INVALID, out
                )
        else:
            if price is not None:
                return self._reject(
                    account, oid, "market order must not have a price", REJ_INVALID, out
                )
            if tif not in (IOC, FOK) or type(tif) is not int or post_only is not False:
                return self._reject(
                    account,
                    oid,
                    "market order needs tif ioc or fok and no post_only",
                    REJ_INVALID,
                    out,
                )
            if side == BUY:
                if type(budget) is not int or budget <= 0:
                    return self._reject(
                        account,
                        oid,
                        f"a market buy needs a budget (units of {pair.quote}) > 0",
                        REJ_INVALID,
                        out,
                    )
                cap = _budget_cap(pair, qty, budget)
                if cap < 1:
                    return self._reject(
                        account,
                        oid,
                        f"budget {self.table.fmt(pair.quote, budget)}"
                        f" {pair.quote} cannot pay for qty at any price",
                        REJ_OUT_OF_RANGE,
                        out,
                    )
                # The engine has no budget orders: a market buy goes on as an IOC/FOK limit at
                # the highest price its budget pays for all of qty, so it cannot overspend.
                fwd_type, price = LIMIT, cap
            elif budget is not None:
                return self._reject(
                    account, oid, "only a market buy carries a budget", REJ_INVALID, out
                )
        fee = pair.fee
        o = HeldOrder(
            symbol, side, price, cap or 0, qty, 0, 0, 0, fee.maker_bps, fee.taker_bps, 0, 0
        )
        need = required(o, pair)
        asset = pair.quote if side == BUY else pair.base
        cell = self._cell(account, asset, create=False)
        avail = cell[0] if cell else 0
        if need > avail:
            return self._insufficient(account, oid, asset, avail, need, out)
        cell = self._cell(account, asset)
        cell[0] -= need
        cell[1] += need
        o.held = need
        self.orders[(account, symbol, oid)] = o
        self._bal(out, account, asset, "hold", oid)
        fwd = (OP_NEW, symbol, oid, account, side, fwd_type, price, qty, tif, post_only, stp)
        o.opened = self._forward(symbol, fwd, out)
        return None

    def _amend(self, cmd: Any, out: list[tuple]) -> None:
        if len(cmd) != 6:
            return self._reject(
                _f(cmd, 3), _f(cmd, 2), "amend: expected 6 fields", REJ_MALFORMED, out
            )
        _, symbol, oid, account, qty, price = cmd
        refused = self._order_gate(symbol, oid, account)
        if refused:
            return self._reject(account, oid, *refused, out)
        pair = self.table.pairs[symbol]
        o = self.orders.get((account, symbol, oid))
        if o is None:
            return self._reject(
                account, oid, "order is not open on this account", REJ_NOT_LIVE, out
            )
        if qty is None and price is None:
            return self._reject(account, oid, "amend needs qty and/or price", REJ_INVALID, out)
        if qty is not None and (type(qty) is not int or qty <= 0):
            return self._reject(
                account,
                oid,
                "qty must be an integer number of lots > 0",
                REJ_INVALID if type(qty) is int else REJ_MALFORMED,
                out,
            )
        if price is not None:
            if type(price) is not int:
                return self._reject(
                    account, oid, "price must be an integer number of ticks", REJ_MALFORMED, out
                )
            if not 0 < price <= pair.max_price_ticks:
                return self._reject(account, oid, "price out of range", REJ_OUT_OF_RANGE, out)
            if o.price is None:
                return self._reject(
                    account, oid, "a market order has no price to amend", REJ_INVALID, out
                )
        if o.side == BUY and price is not None and price > o.cap:
            # Raising a buy's price raises what it can cost: hold the difference first.
            old = o.held
            cap = o.cap
            o.cap = price
            extra = required(o, pair) - old
            o.cap = cap
            cell = self._cell(account, pair.quote)
            if extra > cell[0]:
                return self._insufficient(account, oid, pair.quote, cell[0], extra, out)
            o.cap = price
            o.held += extra
            cell[0] -= extra
            cell[1] += extra
            self._bal(out, account, pair.quote, "hold", oid)
        o.pending += 1
        self._forward(symbol, (OP_AMEND, symbol, oid, account, qty, price), out)
        return None

    def _order_gate(self, symbol: object, oid: object, account: object) -> tuple[str, int] | None:
        if type(symbol) is not str or symbol not in self.table.pairs:
            return f"unknown symbol {_q(symbol, 40)}", REJ_UNKNOWN_SYMBOL
        if not _ident(oid) or not _ident(account):
            return f"id and account must be strings of 1..{MAX_ID_LEN} chars", REJ_MALFORMED
        if not self.owns(account):
            return (
                f"account {account} belongs to account shard "
                f"{account_shard_for(account, self.shards)}",
                REJ_WRONG_SHARD,
            )
        return None

    # ------------------------------------------------------------------ settlements

    def _settle(self, cmd: Any, out: list[tuple]) -> None:
        eshard, eseq, prev = _f(cmd, 1), _f(cmd, 2), _f(cmd, 3)
        if not all(type(x) is int and x >= 0 for x in (eshard, eseq, prev)) or eseq <= prev:
            return self._anomaly(
                eshard, eseq, "settlement without a valid (eshard, eseq, prev)", out
            )
        verdict = self.inbox.check(eshard, eseq, prev)
        if verdict == DUPLICATE:
            self.duplicates += 1
            return None
        if verdict != APPLY:
            self.gaps += 1
            self.seq += 1
            out.append((AE_GAP, self.seq, eshard, self.inbox.last.get(eshard, 0), prev, eseq))
            return None
        # From here the message is consumed whatever it says: a bad one is an anomaly (alert),
        # not a reason to stall the link.
        self.inbox.applied(eshard, eseq)
        op = cmd[0]
        if op == S_TRADE:
            why = self._trade(cmd, out)
        elif op == S_CANCELLED:
            why = self._ended(cmd, out)
        elif op == S_REJECTED:
            why = self._refused(cmd, out)
        else:
            why = self._amended(cmd, out)
        if why:
            self._anomaly(eshard, eseq, why, out)
        return None

    def _trade(self, cmd: Any, out: list[tuple]) -> str | None:
        if len(cmd) != 13:
            return "trade: expected 13 fields"
        (_, _, _, _, symbol, price, qty, t_acct, t_id, m_acct, m_id, t_side, trade_id) = cmd
        pair = self.table.pairs.get(symbol) if type(symbol) is str else None
        if pair is None:
            return f"trade of unknown symbol {_q(symbol, 40)}"
        if not (
            type(price) is int
            and price > 0
            and type(qty) is int
            and qty > 0
            and t_side in (BUY, SELL)
            and type(t_side) is int
        ):
            return "trade: bad price/qty/side"
        sides = []
        for acct, oid, side, maker in (
            (t_acct, t_id, t_side, False),
            (m_acct, m_id, t_side ^ 1, True),
        ):
            if not self.owns(acct):
                continue
            o = self.orders.get((acct, symbol, oid)) if type(oid) is str else None
            if o is None:
                return f"trade {_q(trade_id, 20)}: no open order {_q(oid, 70)} of {acct}"
            if o.side != side or qty > o.rem or (side == BUY and price > o.cap):
                return (
                    f"trade {_q(trade_id, 20)}: does not fit order {oid} (side {o.side}, "
                    f"open {o.rem}, cap {o.cap})"
                )
            sides.append((acct, oid, o, maker))
        if not sides:
            return f"trade {_q(trade_id, 20)}: neither side belongs to this shard"
        ref = f"t{trade_id}"
        notional = price * qty * pair.quote_per_tick_lot
        base = qty * pair.base_per_lot
        for acct, oid, o, maker in sides:
            o.rem -= qty
            o.fee_num += notional * (o.maker_bps if maker else o.taker_bps)
            charged = _ceil_div(o.fee_num, _BPS)
            fee = charged - o.fee_charged
            o.fee_charged = charged
            if o.side == BUY:
                pay = notional + fee
                left = required(o, pair) if o.rem else 0
                release = o.held - pay - left  # >= 0: see ``required``
                q = self._cell(acct, pair.quote)
                q[1] -= pay + release
                q[0] += release
                o.held = left
                self._cell(acct, pair.base)[0] += base
                self._flow(pair.quote, -notional)
                self._flow(pair.base, base)
            else:
                b = self._cell(acct, pair.base)
                b[1] -= base
                o.held -= base
                self._cell(acct, pair.quote)[0] += notional - fee
                self._flow(pair.quote, notional)
                self._flow(pair.base, -base)
            if fee:
                self.fees[pair.quote] = self.fees.get(pair.quote, 0) + fee
                self.seq += 1
                out.append((AE_FEES, self.seq, pair.quote, self.fees[pair.quote]))
            if not o.rem:
                self._close(acct, oid, o, pair, out, ref)
            self._bal(out, acct, pair.quote, "trade", ref)
            self._bal(out, acct, pair.base, "trade", ref)
        return None

    def _ended(self, cmd: Any, out: list[tuple]) -> str | None:
        if len(cmd) != 9:
            return "cancelled: expected 9 fields"
        _, _, _, _, symbol, account, oid, reason, qty = cmd
        found = self._settled_order(symbol, account, oid)
        if isinstance(found, str):
            return found
        o, pair = found
        self._close(account, oid, o, pair, out, oid)
        if qty != o.rem:
            return f"order {oid} ended with {_q(qty, 20)} lots open, this shard had {o.rem}"
        return None

    def _refused(self, cmd: Any, out: list[tuple]) -> str | None:
        """The engine refused a forwarded command; ``cause`` is this shard's seq of it (the
        engine shard knows which forward each of its events answers). A refused amend of an
        order that has ended since, or whose id a newer order reuses (``cause`` older than the
        order), is the normal race of an amend with a fill: nothing to do."""
        if len(cmd) != 10:
            return "rejected: expected 10 fields"
        _, _, _, _, symbol, account, oid, op, code, cause = cmd
        found = self._settled_order(symbol, account, oid)
        if not isinstance(found, str) and type(cause) is int and cause == found[0].opened:
            # The forward that placed the order was refused: it never lived, whatever ``op``
            # the engine shard could read from it.
            o, pair = found
            self._close(account, oid, o, pair, out, oid)
            return None
        if op == OP_AMEND and type(cause) is int:
            if isinstance(found, str) or cause < found[0].opened:
                return None
            o, pair = found
            if o.pending:
                o.pending -= 1
            return self._rehold(account, oid, o, pair, out)
        # The engine shard could not name the order (a forward it refused by its shape, whose
        # names are junk or another order's): the forward's seq still does. Release the hold
        # that forward took, and report the anomaly.
        by_cause = self._opened_by(cause)
        if by_cause is not None:
            (acct, _, boid), o = by_cause
            self._close(acct, boid, o, self.table.pairs[o.symbol], out, boid)
            return f"refused forward {cause} named {_q(account, 70)}/{_q(oid, 70)}: released {boid}"
        if isinstance(found, str):
            return found
        return f"rejected settlement for op {_q(op, 20)} cause {_q(cause, 20)} does not fit {oid}"

    def _opened_by(self, cause: object) -> tuple[tuple[str, str, str], HeldOrder] | None:
        """The open order the forward with seq ``cause`` placed (a scan: only on the anomaly
        path, for a refusal the engine shard could not name)."""
        if type(cause) is not int or cause <= 0:
            return None
        for key, o in self.orders.items():
            if o.opened == cause:
                return key, o
        return None

    def _amended(self, cmd: Any, out: list[tuple]) -> str | None:
        if len(cmd) != 9:
            return "amended: expected 9 fields"
        _, _, _, _, symbol, account, oid, qty, price = cmd
        found = self._settled_order(symbol, account, oid)
        if isinstance(found, str):
            return found
        o, pair = found
        if type(qty) is not int or not 0 < qty <= o.rem or type(price) is not int or price < 1:
            return (
                f"amended {oid}: qty {_q(qty, 20)} / price {_q(price, 20)} do not fit open {o.rem}"
            )
        unsolicited = not o.pending
        o.rem, o.price = qty, price
        if o.pending:
            o.pending -= 1
        if o.side == BUY and price > o.cap:
            o.cap = price  # only possible if an amend bypassed this shard; _rehold takes it
        short = self._rehold(account, oid, o, pair, out)
        if short or unsolicited:
            return short or f"amended {oid}: an amend this shard did not forward"
        return None

    def _settled_order(self, symbol: object, account: object, oid: object):
        pair = self.table.pairs.get(symbol) if type(symbol) is str else None
        if pair is None or not self.owns(account) or type(oid) is not str:
            return (
                f"settlement for {_q(account, 70)}/{_q(symbol, 40)}/{_q(oid, 70)} not of this shard"
            )
        o = self.orders.get((account, symbol, oid))
        if o is None:
            return f"settlement for order {_q(oid, 70)} of {account} that is not open here"
        return o, pair

    def _rehold(
        self, account: str, oid: str, o: HeldOrder, pair: Pair, out: list[tuple]
    ) -> str | None:
        """Bring the order's hold to exactly ``required`` (cap back to the price once no amend
        is in flight); release the slack, or take a shortfall from available if it can."""
        if not o.pending and o.side == BUY and o.price is not None:
            o.cap = o.price
        need = required(o, pair)
        asset = pair.quote if o.side == BUY else pair.base
        cell = self._cell(account, asset)
        diff = o.held - need
        short = None
        if diff < 0 and -diff > cell[0]:
            short = f"order {oid} needs {-diff} more units of {asset} than available"
            diff = -cell[0]
        if diff:
            cell[0] += diff
            cell[1] -= diff
            o.held -= diff
            self._bal(out, account, asset, "release" if diff > 0 else "hold", oid)
        return short

    def _close(
        self, account: str, oid: str, o: HeldOrder, pair: Pair, out: list[tuple], ref: str
    ) -> None:
        """The order ended: release what is left of its hold and forget it."""
        del self.orders[(account, o.symbol, oid)]
        if o.held:
            asset = pair.quote if o.side == BUY else pair.base
            cell = self._cell(account, asset)
            cell[0] += o.held
            cell[1] -= o.held
            o.held = 0
            self._bal(out, account, asset, "release", ref)

    # ------------------------------------------------------------------ helpers

    def _forward(self, symbol: str, cmd: tuple, out: list[tuple]) -> int:
        eshard = self.engine_for(symbol)
        self.seq += 1
        out.append((AE_FORWARD, self.seq, eshard, self.outbox.put(eshard, self.seq), cmd))
        return self.seq

    def _cell(self, account: str, asset: str, create: bool = True) -> list[int]:
        assets = self.balances.get(account)
        if assets is None:
            if not create:
                return None  # type: ignore[return-value]
            assets = self.balances[account] = {}
        cell = assets.get(asset)
        if cell is None and create:
            cell = assets[asset] = [0, 0]
        return cell  # type: ignore[return-value]

    def _total(self, asset: str) -> int:
        return self.deposited.get(asset, 0) - self.withdrawn.get(asset, 0) + self.flow.get(asset, 0)

    def _flow(self, asset: str, amount: int) -> None:
        self.flow[asset] = self.flow.get(asset, 0) + amount

    def _bal(self, out: list[tuple], account: str, asset: str, why: str, ref: str) -> None:
        cell = self.balances[account][asset]
        self.seq += 1
        out.append((AE_BALANCE, self.seq, account, asset, cell[0], cell[1], why, ref))

    def _insufficient(
        self, account: str, ref: str, asset: str, avail: int, need: int, out: list[tuple]
    ) -> None:
        fmt = self.table.fmt
        return self._reject(
            account,
            ref,
            f"insufficient {asset}: available {fmt(asset, avail)}, needed {fmt(asset, need)}",
            REJ_INSUFFICIENT_FUNDS,
            out,
        )

    def _reject(
        self, account: object, ref: object, reason: str, code: int, out: list[tuple]
    ) -> None:
        self.seq += 1
        out.append(
            (
                AE_REJECTED,
                self.seq,
                account if type(account) is str else "",
                ref if type(ref) is str else "",
                reason[:MAX_REASON_LEN],
                code,
            )
        )
        return None

    def _anomaly(self, eshard: object, eseq: object, reason: str, out: list[tuple]) -> None:
        self.anomalies += 1
        self.seq += 1
        out.append(
            (
                AE_ANOMALY,
                self.seq,
                eshard if type(eshard) is int else -1,
                eseq if type(eseq) is int else -1,
                reason[:MAX_REASON_LEN],
            )
        )
        return None

    # ------------------------------------------------------------------ state

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to continue identically, as msgpack-able plain data (lists of
        pairs, not int-keyed maps). Version 1."""
        return {
            "version": 1,
            "shard": self.shard,
            "shards": self.shards,
            "seq": self.seq,
            "balances": [
                [acct, asset, cell[0], cell[1]]
                for acct in sorted(self.balances)
                for asset, cell in sorted(self.balances[acct].items())
            ],
            "orders": [[*key, *o.as_tuple()] for key, o in self.orders.items()],
            "fees": sorted(self.fees.items()),
            "deposited": sorted(self.deposited.items()),
            "withdrawn": sorted(self.withdrawn.items()),
            "flow": sorted(self.flow.items()),
            "refs": [[ref, *v] for ref, v in self.refs.items()],  # oldest first
            "ref_window": self.ref_window,
            "inbox": sorted(self.inbox.last.items()),
            "outbox": sorted(self.outbox.last.items()),
        }

    @classmethod
    def restore(
        cls,
        state: Mapping[str, Any],
        markets: Mapping[str, Market],
        fees: Mapping[str, Fee] | None = None,
        engine_for: Callable[[str], int] | None = None,
        ref_window: int = REF_WINDOW,
    ) -> AccountCore:
        """A core that continues exactly where the one that made ``state`` stood.

        The dedup window is the snapshot's own (``ref_window`` applies only to a snapshot
        made before the window existed): the journal after the snapshot was written under
        it, so a replay evicts the same refs as the live run did. Raises ValueError when the
        state is not usable (unknown version, an asset or market this table lacks, a bad
        window, or a state that fails ``check_integrity``).
        """
        try:
            if state.get("version") != 1:
                raise ValueError(f"account snapshot version {state.get('version')!r} unknown")
            window = state.get("ref_window", ref_window)
            core = cls(
                markets, state["shard"], state["shards"], fees, engine_for, state["seq"], window
            )
            units = core.table.units
            for acct, asset, avail, held in state["balances"]:
                if asset not in units:
                    raise ValueError(f"balance in unknown asset {asset!r}")
                core.balances.setdefault(acct, {})[asset] = [int(avail), int(held)]
            for acct, symbol, oid, *fields in state["orders"]:
                if symbol not in core.table.pairs:
                    raise ValueError(f"open order of unknown market {symbol!r}")
                core.orders[(acct, symbol, oid)] = HeldOrder(*fields)
            for name in ("fees", "deposited", "withdrawn", "flow"):
                target = getattr(core, name)
                for asset, amount in state[name]:
                    if asset not in units:
                        raise ValueError(f"{name} in unknown asset {asset!r}")
                    target[asset] = int(amount)
            for ref, op, acct, asset, amount in state["refs"]:
                core._remember(ref, (op, acct, asset, amount))  # (an older, larger set: trimmed)
            core.inbox = Inbox({int(k): int(v) for k, v in state["inbox"]})
            core.outbox = Outbox({int(k): int(v) for k, v in state["outbox"]})
            core.check_integrity()
        except IntegrityError as exc:
            raise ValueError(f"account snapshot fails its checks: {exc}") from None
        except (KeyError, TypeError) as exc:
            raise ValueError(f"account snapshot unusable ({exc!r})") from None
        return core

    def check_integrity(self) -> None:
        """Raise IntegrityError unless the books balance:

        * every balance and every order's hold >= 0, every order owned here and of a known pair;
        * a buy holds at its price, or higher only while an amend is in flight;
        * every order's hold == ``required`` (what its open remainder can still cost) and each
          account's held == Σ of its open orders' holds, per asset;
        * per asset: Σ(available + held) + fees == deposits - withdrawals + net trade inflow
          (the inflows of all account shards sum to 0, so across shards it is the issue's
          identity Σ(available + held) + fees == deposits - withdrawals).
        """
        held: dict[tuple[str, str], int] = {}
        for (acct, symbol, oid), o in self.orders.items():
            pair = self.table.pairs.get(symbol)
            if pair is None or o.symbol != symbol or not self.owns(acct):
                raise IntegrityError(f"order {oid} of {acct} on {symbol} does not belong here")
            if o.rem <= 0 or o.held < 0 or o.pending < 0:
                raise IntegrityError(f"order {oid}: open {o.rem}, held {o.held}")
            if (
                o.side == BUY
                and o.price is not None
                and (o.cap < o.price or (not o.pending and o.cap != o.price))
            ):
                raise IntegrityError(
                    f"order {oid}: holds at {o.cap}, price {o.price}, {o.pending} amends in flight"
                )
            need = required(o, pair)
            if o.held != need:
                raise IntegrityError(f"order {oid} of {acct}: holds {o.held}, can cost {need}")
            asset = pair.quote if o.side == BUY else pair.base
            held[(acct, asset)] = held.get((acct, asset), 0) + o.held
        totals: dict[str, int] = {}
        for acct, assets in self.balances.items():
            if not self.owns(acct):
                raise IntegrityError(f"balance of account {acct} of another shard")
            for asset, (avail, h) in assets.items():
                if avail < 0 or h < 0:
                    raise IntegrityError(f"{acct} {asset}: available {avail}, held {h}")
                if h != held.get((acct, asset), 0):
                    raise IntegrityError(
                        f"{acct} {asset}: held {h}, open orders hold {held.get((acct, asset), 0)}"
                    )
                totals[asset] = totals.get(asset, 0) + avail + h
        for asset in self.table.units:
            if self.fees.get(asset, 0) < 0:
                raise IntegrityError(f"fee ledger {asset} negative")
            have = totals.get(asset, 0) + self.fees.get(asset, 0)
            if have != self._total(asset):
                raise IntegrityError(
                    f"{asset}: balances + fees {have} != deposits - withdrawals"
                    f" + inflow {self._total(asset)}"
                )


def _budget_cap(pair: Pair, qty: int, budget: int) -> int:
    """The highest price (ticks, at most the market's max) at which ``qty`` lots plus the taker
    fee cost no more than ``budget`` units of quote; 0 when not even one tick fits."""
    per = qty * pair.quote_per_tick_lot
    tb = pair.fee.taker_bps

    def cost(p: int) -> int:
        rc = p * per
        return rc + _ceil_div(rc * tb, _BPS)

    p = min(budget * _BPS // (per * (_BPS + tb)), pair.max_price_ticks)
    while p < pair.max_price_ticks and cost(p + 1) <= budget:
        p += 1
    while p > 0 and cost(p) > budget:
        p -= 1
    return p


def _ident(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_ID_LEN


def _q(value: object, limit: int) -> str:
    """Client or peer input quoted in a reason: at most ``limit`` chars, and never an
    exception (``repr`` of a 1,000-deep list raises RecursionError): scalars are shown,
    containers by their type only."""
    if value is None or type(value) in (str, bytes, int, float, bool):
        return repr(value[: limit + 1] if type(value) in (str, bytes) else value)[:limit]
    return type(value).__name__


def _f(cmd: Any, i: int) -> Any:
    try:
        return cmd[i]
    except Exception:
        return None

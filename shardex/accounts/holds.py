"""New orders and amends of an account shard: the hold taken before an order is forwarded
to its engine shard, and the forward itself (pure).
"""

from __future__ import annotations

from typing import Any

from shardex.accounts.assets import Pair
from shardex.accounts.codes import AE_BALANCE, AE_FORWARD
from shardex.accounts.ledger import (
    _BPS,
    AVAIL,
    HELD,
    HeldOrder,
    Ledger,
    _ceil_div,
    _f,
    _q,
    account_shard_for,
    required,
)
from shardex.accounts.triggers import A_NEW_WIDTH, split_stop, stop_forward
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
    REJ_UNKNOWN_SYMBOL,
    REJ_WRONG_SHARD,
)
from shardex.wire.layouts import CMD_ACCOUNT, CMD_ID


class Holds(Ledger):
    """The ``new`` and ``amend`` commands of ``AccountCore``."""

    def _new(self, cmd: Any, out: list[tuple]) -> None:
        if len(cmd) == A_NEW_WIDTH:  # (inline: ``split_stop``, ``rates``, ``_found``, ``_forward``)
            plain, stop = cmd, None
        else:  # (a stop / take-profit is held as the order it becomes)
            plain, stop = split_stop(cmd)
            if plain is None:
                return self._reject(_f(cmd, CMD_ACCOUNT), _f(cmd, CMD_ID), *stop, out)
        _, symbol, oid, account, side, otype, price, qty, tif, post_only, stp, budget = plain
        pair = self.table.pairs.get(symbol) if type(symbol) is str else None
        if pair is None or self.shards != 1 or not (  # (``_order_gate``'s pass, inline)
            type(oid) is str and 0 < len(oid) <= MAX_ID_LEN
            and type(account) is str and 0 < len(account) <= MAX_ID_LEN
        ):  # fmt: skip
            refused = self._order_gate(symbol, oid, account)  # (why, or a pass with shards)
            if refused:
                return self._reject(account, oid, *refused, out)
            pair = self.table.pairs[symbol]
        if (account, symbol, oid) in self.orders:
            why = f"duplicate id {oid}: an open order of {account} has it"
            return self._reject(account, oid, why, REJ_DUPLICATE_ID, out)
        refused = _new_refusal(pair, side, otype, price, qty, tif, post_only, budget)
        if refused:
            return self._reject(account, oid, *refused, out)
        tiers = self.schedule.tiers  # (the account's tier now: fixed for the order)
        fee = tiers[0].rates[symbol] if len(tiers) == 1 else self.rates(account, symbol)
        fwd_type, cap = otype, pair.max_price_ticks if pair.perp and price is None else price
        if otype != LIMIT and side == BUY and not pair.perp:
            price = cap = self._budget_price(account, oid, pair, qty, budget, fee, out)
            if cap is None:
                return None
            fwd_type = LIMIT
        o = HeldOrder(
            symbol, side, price, cap or 0, qty, 0, 0, 0, fee.maker_bps, fee.taker_bps, 0, 0
        )
        seq = self.seq
        if not pair.perp:  # (a perp order holds nothing, needs no budget, caps at the max
            # price: the engine's margin check gates it, its fills are the margin's to judge)
            need = required(o, pair)
            asset = pair.quote if side == BUY else pair.base
            cells = self.balances.get(account)
            cell = None if cells is None else cells.get(asset)
            avail = cell[AVAIL] if cell else 0
            if need > avail:
                return self._insufficient(account, oid, asset, avail, need, out)
            if cell is None:  # (need is 0: made, as ``_cell`` would)
                cell = self._cell(account, asset)
            cell[AVAIL] -= need
            cell[HELD] += need
            o.held = need
            seq += 1
            out.append((AE_BALANCE, seq, account, asset, cell[AVAIL], cell[HELD], "hold", oid))
        self.orders[(account, symbol, oid)] = o
        self.open_by.setdefault(account, {})[(symbol, oid)] = o
        fwd = (OP_NEW, symbol, oid, account, side, fwd_type, price, qty, tif, post_only, stp)
        if stop is not None or fwd_type != otype:
            fwd = stop_forward(fwd, stop, fwd_type != otype)
        eshard = self.engine_for(symbol)
        self.seq = o.opened = seq = seq + 1
        out.append((AE_FORWARD, seq, eshard, self.outbox.put(eshard, seq), fwd))
        return None

    def _budget_price(
        self, account: str, oid: str, pair: Pair, qty: int, budget: int, fee: Any, out: list
    ) -> int | None:
        """The price a market buy goes on at, or None when it was refused (its budget pays for
        qty at no price of the grid). The engine has no budget orders: a market buy goes on as
        an IOC/FOK limit at the highest price its budget pays for all of qty, so it cannot
        overspend."""
        cap = _budget_cap(pair, qty, budget, fee.taker_bps)
        if cap < 1:
            why = f"budget {self.table.fmt(pair.quote, budget)} {pair.quote} cannot pay for qty"
            self._reject(account, oid, f"{why} at any price", REJ_OUT_OF_RANGE, out)
            return None
        return cap

    def _amend(self, cmd: Any, out: list[tuple]) -> None:
        if len(cmd) != 6:
            return self._reject(
                _f(cmd, CMD_ACCOUNT),
                _f(cmd, CMD_ID),
                "amend: expected 6 fields",
                REJ_MALFORMED,
                out,
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
        if o.side == BUY and price is not None and price > o.cap and pair.perp:
            o.cap = price  # (a perp order holds nothing)
        elif o.side == BUY and price is not None and price > o.cap:
            # Raising a buy's price raises what it can cost: hold the difference first.
            old = o.held
            cap = o.cap
            o.cap = price
            extra = required(o, pair) - old
            o.cap = cap
            cell = self._cell(account, pair.quote)
            if extra > cell[AVAIL]:
                return self._insufficient(account, oid, pair.quote, cell[AVAIL], extra, out)
            o.cap = price
            o.held += extra
            cell[AVAIL] -= extra
            cell[HELD] += extra
            self._bal(out, account, pair.quote, "hold", oid)
        o.pending += 1
        self._forward(symbol, (OP_AMEND, symbol, oid, account, qty, price), out)
        return None

    def _order_gate(self, symbol: object, oid: object, account: object) -> tuple[str, int] | None:
        if type(symbol) is not str or symbol not in self.table.pairs:
            return f"unknown symbol {_q(symbol, 40)}", REJ_UNKNOWN_SYMBOL
        if not (
            type(oid) is str and 0 < len(oid) <= MAX_ID_LEN  # (``_ident``, inline: per order)
            and type(account) is str and 0 < len(account) <= MAX_ID_LEN
        ):  # fmt: skip
            return f"id and account must be strings of 1..{MAX_ID_LEN} chars", REJ_MALFORMED
        if self.shards != 1 and not self.owns(account):  # (one account shard owns them all)
            return (
                f"account {account} belongs to account shard "
                f"{account_shard_for(account, self.shards)}",
                REJ_WRONG_SHARD,
            )
        return None


def _budget_cap(pair: Pair, qty: int, budget: int, taker_bps: int | None = None) -> int:
    """The highest price (ticks, at most the market's max) at which ``qty`` lots plus the taker
    fee (``taker_bps``; default: the market's) cost no more than ``budget`` units of quote; 0
    when not even one tick fits."""
    per = qty * pair.quote_per_tick_lot
    tb = pair.fee.taker_bps if taker_bps is None else taker_bps

    def cost(p: int) -> int:
        rc = p * per
        return rc + _ceil_div(rc * tb, _BPS)

    p = min(budget * _BPS // (per * (_BPS + tb)), pair.max_price_ticks)
    while p < pair.max_price_ticks and cost(p + 1) <= budget:
        p += 1
    while p > 0 and cost(p) > budget:
        p -= 1
    return p


def _new_refusal(
    pair: Pair, side: Any, otype: Any, price: Any, qty: Any, tif: Any, post_only: Any, budget: Any
) -> tuple[str, int] | None:
    """Why a new order's terms are not valid (reason, code), or None; in the order ``_new``
    checks them (a market buy's budget is then checked against the price grid there)."""
    if type(side) is not int or side not in (0, 1):  # (spelled out twice: once per order)
        return f"unknown side {_q(side, 20)}", REJ_INVALID if type(side) is int else REJ_MALFORMED
    if type(otype) is not int or otype not in (0, 1):
        return f"unknown type {_q(otype, 20)}", REJ_INVALID if type(otype) is int else REJ_MALFORMED
    if type(qty) is not int:
        return "qty must be an integer number of lots", REJ_MALFORMED
    if not 0 < qty <= pair.max_qty_lots:
        return "qty out of range", REJ_OUT_OF_RANGE
    if otype == LIMIT:
        if type(price) is not int:
            return "limit order needs an integer price in ticks", REJ_MALFORMED
        if not 0 < price <= pair.max_price_ticks:
            return "price out of range", REJ_OUT_OF_RANGE
        if budget is not None:
            return "only a market buy carries a budget", REJ_INVALID
        return None
    if price is not None:
        return "market order must not have a price", REJ_INVALID
    if tif not in (IOC, FOK) or type(tif) is not int or post_only is not False:
        return "market order needs tif ioc or fok and no post_only", REJ_INVALID
    if side == BUY and not pair.perp:  # (a perp market order needs margin, not a budget)
        if type(budget) is not int or budget <= 0:
            return f"a market buy needs a budget (units of {pair.quote}) > 0", REJ_INVALID
    elif budget is not None:
        return "only a market buy carries a budget", REJ_INVALID
    return None

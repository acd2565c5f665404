"""A small, obviously-correct reference matcher used to cross-check the fast engine.

Everything is a flat list scanned and sorted on every step: slow on purpose, easy to read.
It consumes the same well-formed engine command tuples and emits the same event tuples; reject
reasons are not modelled (callers compare rejects by kind, seq, symbol and id only).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from shardex.engine.codes import (
    BUY,
    EV_ACCEPTED,
    EV_AMENDED,
    EV_CANCELLED,
    EV_REJECTED,
    EV_TRADE,
    FOK,
    GTC,
    MARKET,
    OP_AMEND,
    OP_CANCEL,
    OP_NEW,
    STP_CANCEL_MAKER,
    STP_CANCEL_TAKER,
)


@dataclass
class RefOrder:
    id: str
    account: str
    side: int
    price: int
    qty: int
    stp: int
    post_only: bool
    time: int


class RefEngine:
    def __init__(self) -> None:
        self.orders: dict[str, list[RefOrder]] = {}  # symbol -> resting orders (any order)
        self.trade_ids: dict[str, int] = {}
        self.seq = 0
        self.clock = 0
        self.out: list[tuple] = []

    def _ev(self, *fields) -> None:
        self.seq += 1
        self.out.append((fields[0], self.seq, *fields[1:]))

    def _crosses(self, taker_side: int, limit: int | None, maker: RefOrder) -> bool:
        if maker.side == taker_side:
            return False
        if limit is None:
            return True
        return maker.price <= limit if taker_side == BUY else maker.price >= limit

    def _best(self, symbol: str, taker_side: int, limit: int | None) -> RefOrder | None:
        cands = [o for o in self.orders[symbol] if self._crosses(taker_side, limit, o)]
        if not cands:
            return None
        if taker_side == BUY:
            return min(cands, key=lambda o: (o.price, o.time))
        return min(cands, key=lambda o: (-o.price, o.time))

    def _match(self, symbol, side, limit, qty, oid, account, stp) -> tuple[int, int]:
        """Returns (remaining qty, traded qty)."""
        traded = 0
        book = self.orders[symbol]
        while qty > 0:
            maker = self._best(symbol, side, limit)
            if maker is None:
                break
            if stp and maker.account == account:
                if stp != STP_CANCEL_TAKER:
                    book.remove(maker)
                    self._ev(EV_CANCELLED, symbol, maker.id, "stp", maker.qty)
                if stp != STP_CANCEL_MAKER:
                    self._ev(EV_CANCELLED, symbol, oid, "stp", qty)
                    return 0, traded
                continue
            q = min(qty, maker.qty)
            self.trade_ids[symbol] = self.trade_ids.get(symbol, 0) + 1
            self._ev(EV_TRADE, symbol, maker.price, q, oid, maker.id, side, self.trade_ids[symbol])
            maker.qty -= q
            qty -= q
            traded += q
            if maker.qty == 0:
                book.remove(maker)
        return qty, traded

    def _live(self, symbol: str, oid: str) -> RefOrder | None:
        for o in self.orders[symbol]:
            if o.id == oid:
                return o
        return None

    def apply(self, cmd: tuple) -> list[tuple]:
        self.out = []
        op, symbol, oid, account = cmd[:4]
        self.orders.setdefault(symbol, [])
        if op == OP_NEW:
            _, _, _, _, side, otype, price, qty, tif, post_only, stp = cmd
            limit = None if otype == MARKET else price
            if self._live(symbol, oid) is not None:
                self._ev(EV_REJECTED, symbol, oid)
                return self.out
            if post_only and self._best(symbol, side, limit) is not None:
                self._ev(EV_REJECTED, symbol, oid)
                return self.out
            self._ev(EV_ACCEPTED, symbol, oid)
            if tif == FOK:
                trial = copy.deepcopy(self)
                trial.out = []
                _, traded = trial._match(symbol, side, limit, qty, oid, account, stp)
                if traded < qty:
                    self._ev(EV_CANCELLED, symbol, oid, "fok", qty)
                    return self.out
            rest, _ = self._match(symbol, side, limit, qty, oid, account, stp)
            if rest > 0:
                if tif == GTC:
                    self.clock += 1
                    self.orders[symbol].append(
                        RefOrder(oid, account, side, price, rest, stp, post_only, self.clock)
                    )
                else:
                    self._ev(EV_CANCELLED, symbol, oid, "ioc", rest)
            return self.out
        order = self._live(symbol, oid)
        if order is None or order.account != account:
            self._ev(EV_REJECTED, symbol, oid)
            return self.out
        if op == OP_CANCEL:
            self.orders[symbol].remove(order)
            self._ev(EV_CANCELLED, symbol, oid, "user", order.qty)
            return self.out
        assert op == OP_AMEND
        qty, price = cmd[4], cmd[5]
        new_qty = order.qty if qty is None else qty
        if new_qty > order.qty:
            self._ev(EV_REJECTED, symbol, oid)
            return self.out
        if price is None or price == order.price:
            order.qty = new_qty
            self._ev(EV_AMENDED, symbol, oid, new_qty, order.price)
            return self.out
        if order.post_only and self._best(symbol, order.side, price) is not None:
            self._ev(EV_REJECTED, symbol, oid)
            return self.out
        self.orders[symbol].remove(order)
        self._ev(EV_AMENDED, symbol, oid, new_qty, price)
        rest, _ = self._match(symbol, order.side, price, new_qty, oid, account, order.stp)
        if rest > 0:
            self.clock += 1
            order.price, order.qty, order.time = price, rest, self.clock
            self.orders[symbol].append(order)
        return self.out

"""A small, obviously-correct reference matcher used to cross-check the fast engine.

Everything is a flat list scanned and sorted on every step: slow on purpose, easy to read.
It consumes the same well-formed engine command tuples and emits the same event tuples; reject
reasons are not modelled (None), reject codes are (callers compare rejects by kind, seq, symbol,
id and code).

It also models each order's fate (``status``, same dicts as ``Engine.order_status``) and the
recent-results window, in the order orders finish (makers as they leave the book, the taker
after its match): two generations of ``window // 2`` finished orders each; when the current one
is full and another order finishes, the previous one is forgotten and the current one becomes
the previous (window 1: only the last finished order; 0: none). Remembered ids refuse a ``new``
that reuses them.

Stop and take-profit orders (13-field news with a ``trigger`` option) wait in a flat pending
list per symbol; after every command, while some pending order's trigger is reached by the
symbol's last trade price, the one to fire is chosen from scratch (up-firing orders by lowest
trigger, down-firing by highest, each then by arrival; of the two, the earlier arrival) and run
as the order it stands for. A gtd or day stop-limit / take-profit-limit expires pending at its
time (swept with the resting orders, by (expire, accept seq, symbol, id)) and, once triggered,
rests with that expire time.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from shardex.engine.codes import (
    BUY,
    DAY,
    EV_ACCEPTED,
    EV_AMENDED,
    EV_CANCELLED,
    EV_REJECTED,
    EV_TRADE,
    EV_TRIGGERED,
    FOK,
    GTC,
    GTD,
    MARKET,
    OP_AMEND,
    OP_CANCEL,
    OP_CANCEL_ALL,
    OP_EXPIRE,
    OP_NEW,
    OP_TIME,
    REJ_AMEND_INCREASE,
    REJ_DUPLICATE_ID,
    REJ_EXPIRED,
    REJ_INVALID,
    REJ_NOT_LIVE,
    REJ_POST_ONLY_CROSS,
    REJ_UNTRIGGERED,
    REJ_WOULD_TRIGGER,
    REJ_WRONG_ACCOUNT,
    STOP_LIMIT,
    STOP_MARKET,
    STP_CANCEL_MAKER,
    STP_CANCEL_TAKER,
    TAKE_PROFIT,
    TAKE_PROFIT_LIMIT,
)

KEEP = 32  # trades reported per order (the engine's RECENT_TRADES)


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
    filled: int = 0
    trades: list[tuple[int, int, int]] = field(default_factory=list)
    accepted: int = 0  # seq of its accepted event (kept across amends)
    expire: int | None = None  # gtd/day: exchange time (ms) at which it expires


@dataclass
class RefPending:
    id: str
    account: str
    side: int
    otype: int
    price: int | None
    qty: int
    tif: int
    stp: int
    trigger: int
    arrival: int
    expire: int | None = None  # gtd/day stop-limit: expires pending (or resting, triggered)
    accepted: int = 0  # seq of its accepted event

    @property
    def up(self) -> bool:
        """Fires when the last price rises to the trigger: stop buys and take-profit sells."""
        stop = self.otype in (STOP_MARKET, STOP_LIMIT)
        return stop if self.side == BUY else not stop

    def reached(self, last: int) -> bool:
        if not last:
            return False
        return last >= self.trigger if self.up else last <= self.trigger


class RefEngine:
    def __init__(self, window: int = 100_000) -> None:
        self.orders: dict[str, list[RefOrder]] = {}  # symbol -> resting orders (any order)
        self.trade_ids: dict[str, int] = {}
        self.seq = 0
        self.clock = 0
        self.out: list[tuple] = []
        self.window = window
        self.gen = window // 2 if window >= 2 else window
        self.current: list[tuple[str, str]] = []  # (symbol, id) of the current generation
        self.previous: list[tuple[str, str]] = []
        self.fates: dict[tuple[str, str], tuple] = {}  # (symbol, id) -> (account, state, ...)
        self.ts = 0  # exchange time (OP_TIME)
        self.switches: dict[tuple[str, str], int] = {}  # dead-man switches: deadline
        self.pending: dict[str, list[RefPending]] = {}
        self.last: dict[str, int] = {}

    def _finish(self, symbol, oid, account, state, filled, trades, reason=None) -> None:
        if not self.window:
            return
        if len(self.current) == self.gen:
            forgotten = self.previous if self.window >= 2 else self.previous + self.current
            for key in forgotten:
                del self.fates[key]
            self.previous = self.current if self.window >= 2 else []
            self.current = []
        self.current.append((symbol, oid))
        self.fates[(symbol, oid)] = (account, state, filled, trades[-KEEP:], reason)

    def status(self, symbol: str, account: str, oid: str) -> dict:
        for p in self.pending.get(symbol, []):
            if p.id == oid and p.account == account:
                return {
                    "state": "pending",
                    "symbol": symbol,
                    "id": oid,
                    "side": p.side,
                    "price": p.price,
                    "qty": p.qty,
                    "filled": 0,
                    "type": p.otype,
                    "trigger": p.trigger,
                }
        for o in self.orders.get(symbol, []):
            if o.id == oid and o.account == account:
                return {
                    "state": "live",
                    "symbol": symbol,
                    "id": oid,
                    "side": o.side,
                    "price": o.price,
                    "qty": o.qty,
                    "filled": o.filled,
                    "trades": o.trades[-KEEP:],
                }
        fate = self.fates.get((symbol, oid))
        if fate is None or fate[0] != account or self._live(symbol, oid) is not None:
            return {"state": "unknown", "symbol": symbol, "id": oid}
        _, state, filled, trades, reason = fate
        st = {"state": state, "symbol": symbol, "id": oid, "filled": filled, "trades": trades}
        if reason is not None:
            st["reason"] = reason
        return st

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

    def _match(self, symbol, side, limit, qty, oid, account, stp, trades) -> tuple[int, int, bool]:
        """Returns (remaining qty, traded qty, stopped by STP); appends the taker's trades."""
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
                    m = maker
                    self._finish(symbol, m.id, m.account, "cancelled", m.filled, m.trades, "stp")
                if stp != STP_CANCEL_MAKER:
                    self._ev(EV_CANCELLED, symbol, oid, "stp", qty)
                    return 0, traded, True
                continue
            q = min(qty, maker.qty)
            self.trade_ids[symbol] = self.trade_ids.get(symbol, 0) + 1
            tid = self.trade_ids[symbol]
            self._ev(EV_TRADE, symbol, maker.price, q, oid, maker.id, side, tid)
            self.last[symbol] = maker.price
            maker.qty -= q
            maker.filled += q
            maker.trades.append((maker.price, q, tid))
            trades.append((maker.price, q, tid))
            qty -= q
            traded += q
            if maker.qty == 0:
                book.remove(maker)
                self._finish(symbol, maker.id, maker.account, "filled", maker.filled, maker.trades)
        return qty, traded, False

    def _live(self, symbol: str, oid: str) -> RefOrder | None:
        for o in self.orders[symbol]:
            if o.id == oid:
                return o
        return None

    def _remove(self, symbol: str, order: RefOrder, reason: str) -> None:
        self.orders[symbol].remove(order)
        self._ev(EV_CANCELLED, symbol, order.id, reason, order.qty)
        self._finish(symbol, order.id, order.account, "cancelled", order.filled, order.trades,
                     reason)  # fmt: skip

    def _drop_pending(self, symbol: str, account: str, reason: str) -> None:
        """A cancel-all or a dead-man switch also cancels the account's pending stops."""
        mine = [p for p in self.pending.get(symbol, []) if p.account == account]
        for p in sorted(mine, key=lambda p: p.arrival):
            self.pending[symbol].remove(p)
            self._ev(EV_CANCELLED, symbol, p.id, reason, p.qty)
            self._finish(symbol, p.id, account, "cancelled", 0, [], reason)

    def _timed(self, cmd: tuple) -> list[tuple]:
        """OP_TIME, OP_EXPIRE and OP_CANCEL_ALL: flat scans, sorted, nothing clever."""
        if cmd[0] == OP_TIME:
            self.ts = max(self.ts, cmd[1])
            return self.out
        if cmd[0] == OP_EXPIRE:
            upto = min(cmd[1], self.ts)
            due = [(o.expire, o.accepted, s, o.id, o) for s, orders in self.orders.items()
                   for o in orders if o.expire is not None and o.expire <= upto]  # fmt: skip
            due += [(p.expire, p.accepted, s, p.id, p) for s, ps in self.pending.items()
                    for p in ps if p.expire is not None and p.expire <= upto]  # fmt: skip
            for *_, s, _, o in sorted(due, key=lambda d: d[:4]):
                if isinstance(o, RefPending):
                    self.pending[s].remove(o)
                    self._ev(EV_CANCELLED, s, o.id, "expired", o.qty)
                    self._finish(s, o.id, o.account, "cancelled", 0, [], "expired")
                else:
                    self._remove(s, o, "expired")
            fired = sorted((d, s, a) for (s, a), d in self.switches.items() if d <= upto)
            for _, s, a in fired:
                del self.switches[(s, a)]
                mine = [o for o in self.orders.get(s, []) if o.account == a]
                for o in sorted(mine, key=lambda o: (o.accepted, o.id)):
                    self._remove(s, o, "deadman")
                self._drop_pending(s, a, "deadman")
            return self.out
        _, symbol, _ref, account = cmd[:4]
        if len(cmd) == 5:  # a dead-man switch: armed, moved, or (0) disarmed
            if not symbol:
                self._ev(EV_REJECTED, symbol, _ref, None, REJ_INVALID)
            elif cmd[4]:
                self.switches[(symbol, account)] = self.ts + cmd[4]
            else:
                self.switches.pop((symbol, account), None)
            return self.out
        for s in [symbol] if symbol else sorted(self.orders):
            mine = [o for o in self.orders.get(s, []) if o.account == account]
            for o in sorted(mine, key=lambda o: (o.accepted, o.id)):
                self._remove(s, o, "cancel_all")
            self._drop_pending(s, account, "cancel_all")
        return self.out

    def _pending(self, symbol: str, oid: str) -> RefPending | None:
        for p in self.pending[symbol]:
            if p.id == oid:
                return p
        return None

    def apply(self, cmd: tuple) -> list[tuple]:
        self.out = []
        if cmd[0] in (OP_TIME, OP_EXPIRE, OP_CANCEL_ALL):
            return self._timed(cmd)
        self.orders.setdefault(cmd[1], [])
        self.pending.setdefault(cmd[1], [])
        self._apply(cmd)
        self._fire(cmd[1])
        return self.out

    def _fire(self, symbol: str) -> None:
        while True:
            last = self.last.get(symbol, 0)
            reached = [p for p in self.pending[symbol] if p.reached(last)]
            ups = sorted((p for p in reached if p.up), key=lambda p: (p.trigger, p.arrival))
            downs = sorted((p for p in reached if not p.up), key=lambda p: (-p.trigger, p.arrival))
            tops = [group[0] for group in (ups, downs) if group]
            if not tops:
                return
            p = min(tops, key=lambda p: p.arrival)
            self.pending[symbol].remove(p)
            self._ev(EV_TRIGGERED, symbol, p.id, last, p.trigger)
            limit = None if p.otype in (STOP_MARKET, TAKE_PROFIT) else p.price
            self._run(symbol, p.id, p.account, p.side, limit, p.price, p.qty, p.tif, False, p.stp,
                      p.expire, p.accepted)

    def _new_stop(self, cmd: tuple, expire: int | None) -> None:
        _, symbol, oid, account, side, otype, price, qty, tif, _, stp, _, opts = cmd
        p = RefPending(oid, account, side, otype, price, qty, tif, stp, opts["trigger"], self.seq,
                       expire)  # fmt: skip
        if p.reached(self.last.get(symbol, 0)):
            self._ev(EV_REJECTED, symbol, oid, None, REJ_WOULD_TRIGGER)
            return
        self._ev(EV_ACCEPTED, symbol, oid)
        p.accepted = self.seq
        self.pending[symbol].append(p)

    def _run(self, symbol, oid, account, side, limit, price, qty, tif, post_only, stp,
             expire=None, accepted=0) -> None:
        """An accepted (or triggered) order from its FOK check on."""
        if tif == FOK:
            trial = copy.deepcopy(self)
            trial.out = []
            _, traded, _ = trial._match(symbol, side, limit, qty, oid, account, stp, [])
            if traded < qty:
                self._ev(EV_CANCELLED, symbol, oid, "fok", qty)
                self._finish(symbol, oid, account, "cancelled", 0, [], "fok")
                return
        trades: list = []
        rest, traded, stopped = self._match(symbol, side, limit, qty, oid, account, stp, trades)
        if stopped:
            self._finish(symbol, oid, account, "cancelled", traded, trades, "stp")
        elif rest == 0:
            self._finish(symbol, oid, account, "filled", traded, trades)
        elif tif in (GTC, GTD, DAY):
            self.clock += 1
            self.orders[symbol].append(
                RefOrder(oid, account, side, price, rest, stp, post_only, self.clock)
            )
            self.orders[symbol][-1].filled = traded
            self.orders[symbol][-1].trades = trades
            self.orders[symbol][-1].accepted = accepted
            self.orders[symbol][-1].expire = expire
        else:
            self._ev(EV_CANCELLED, symbol, oid, "ioc", rest)
            self._finish(symbol, oid, account, "cancelled", traded, trades, "ioc")

    def _apply(self, cmd: tuple) -> None:
        op, symbol, oid, account = cmd[:4]
        if op == OP_NEW:
            opts = cmd[12] if len(cmd) == 13 else {}
            tif, expire = cmd[8], opts.get("expire")
            if tif == GTD and expire <= self.ts:
                self._ev(EV_REJECTED, symbol, oid, None, REJ_EXPIRED)
                return
            if tif == DAY:
                expire = (self.ts // 86_400_000 + 1) * 86_400_000
            if "trigger" in opts and tif in (GTD, DAY) and cmd[5] not in (STOP_LIMIT,
                                                                          TAKE_PROFIT_LIMIT):
                self._ev(EV_REJECTED, symbol, oid, None, REJ_INVALID)  # (limit kinds only)
                return
            taken = self._live(symbol, oid) or self._pending(symbol, oid)
            if taken is not None or (symbol, oid) in self.fates:
                self._ev(EV_REJECTED, symbol, oid, None, REJ_DUPLICATE_ID)
                return
            if "trigger" in opts:
                return self._new_stop(cmd, expire)
            _, _, _, _, side, otype, price, qty, tif, post_only, stp = cmd[:11]
            limit = None if otype == MARKET else price
            if post_only and self._best(symbol, side, limit) is not None:
                self._ev(EV_REJECTED, symbol, oid, None, REJ_POST_ONLY_CROSS)
                return
            self._ev(EV_ACCEPTED, symbol, oid)
            return self._run(symbol, oid, account, side, limit, price, qty, tif, post_only, stp,
                             expire, self.seq)
        p = self._pending(symbol, oid)
        if p is not None:
            if p.account != account:
                self._ev(EV_REJECTED, symbol, oid, None, REJ_WRONG_ACCOUNT)
            elif op == OP_AMEND:
                self._ev(EV_REJECTED, symbol, oid, None, REJ_UNTRIGGERED)
            else:
                self.pending[symbol].remove(p)
                self._ev(EV_CANCELLED, symbol, oid, "user", p.qty)
                self._finish(symbol, oid, account, "cancelled", 0, [], "user")
            return
        order = self._live(symbol, oid)
        if order is None or order.account != account:
            code = REJ_NOT_LIVE if order is None else REJ_WRONG_ACCOUNT
            self._ev(EV_REJECTED, symbol, oid, None, code)
            return
        if op == OP_CANCEL:
            self._remove(symbol, order, "user")
            return
        assert op == OP_AMEND
        qty, price = cmd[4], cmd[5]
        new_qty = order.qty if qty is None else qty
        if new_qty > order.qty:
            self._ev(EV_REJECTED, symbol, oid, None, REJ_AMEND_INCREASE)
            return
        if price is None or price == order.price:
            order.qty = new_qty
            self._ev(EV_AMENDED, symbol, oid, new_qty, order.price)
            return
        if order.post_only and self._best(symbol, order.side, price) is not None:
            self._ev(EV_REJECTED, symbol, oid, None, REJ_POST_ONLY_CROSS)
            return
        self.orders[symbol].remove(order)
        self._ev(EV_AMENDED, symbol, oid, new_qty, price)
        trades = order.trades
        rest, traded, stopped = self._match(
            symbol, order.side, price, new_qty, oid, account, order.stp, trades
        )
        order.filled += traded
        if stopped:
            self._finish(symbol, oid, account, "cancelled", order.filled, trades, "stp")
        elif rest == 0:
            self._finish(symbol, oid, account, "filled", order.filled, trades)
        else:
            self.clock += 1
            order.price, order.qty, order.time = price, rest, self.clock
            self.orders[symbol].append(order)
        return


def d_symbol(orders: dict[str, list[RefOrder]], order: RefOrder) -> str:
    """The symbol whose book holds ``order``."""
    return next(s for s, os in orders.items() if any(o is order for o in os))

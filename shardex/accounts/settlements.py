"""The engine shards' settlements on an account shard: trades, ends, refusals and amends
move money and bring each order's hold back to what it can still cost (pure).
"""

from __future__ import annotations

from typing import Any

from shardex.accounts.assets import Pair
from shardex.accounts.codes import (
    AE_BALANCE,
    AE_GAP,
    S_CANCELLED,
    S_MARGIN,
    S_REJECTED,
    S_TRADE,
)
from shardex.accounts.ledger import (
    _BPS,
    AVAIL,
    HELD,
    HeldOrder,
    Ledger,
    _f,
    _q,
    required,
)
from shardex.accounts.link import APPLY, DUPLICATE
from shardex.engine.codes import (
    BUY,
    OP_AMEND,
    OP_MARGIN,
    SELL,
)
from shardex.wire.layouts import S_ESEQ, S_ESHARD, S_KIND, S_PREV


class Settlements(Ledger):
    """The settlements of ``AccountCore``: checked in order per engine shard, then applied."""

    def _settle(self, cmd: Any, out: list[tuple]) -> None:
        if type(cmd) is tuple and len(cmd) > S_PREV:  # (the link's shape: no ``_f`` calls)
            eshard, eseq, prev = cmd[S_ESHARD], cmd[S_ESEQ], cmd[S_PREV]
        else:
            eshard, eseq, prev = _f(cmd, S_ESHARD), _f(cmd, S_ESEQ), _f(cmd, S_PREV)
        if not (
            type(eshard) is int and eshard >= 0 and type(eseq) is int and type(prev) is int
            and prev >= 0 and eseq > prev
        ):  # fmt: skip
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
        op = cmd[S_KIND]
        if op == S_TRADE:
            why = self._trade(cmd, out)
        elif op == S_CANCELLED:
            why = self._ended(cmd, out)
        elif op == S_REJECTED:
            why = self._refused(cmd, out)
        elif op == S_MARGIN:
            why = self._margin_done(cmd, out)  # (``Margins``)
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
            if not acct or not (  # ("": a liquidation's order, not held here)
                type(acct) is str if self.shards == 1 else self.owns(acct)  # (``owns``, inline)
            ):
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
        if pair.perp:  # (no spot money moves: the position is the engine's, ``_perp_fill``)
            for acct, oid, o, _ in sides:
                self._perp_fill(acct, oid, o, pair, qty, out)
            return None
        ref = f"t{trade_id}"
        notional = price * qty * pair.quote_per_tick_lot
        base = qty * pair.base_per_lot
        for acct, oid, o, maker in sides:
            self._fill(acct, oid, o, maker, pair, notional, base, qty, ref, out)
        return None

    def _fill(
        self, acct: str, oid: str, o: HeldOrder, maker: bool, pair: Pair, notional: int,
        base: int, qty: int, ref: str, out: list[tuple],
    ) -> None:  # fmt: skip
        """One side of a trade on order ``o`` of ``acct``: its fee (``_charge``: a fee
        cumulative and rounded up, a rebate per fill rounded down), the money moved between
        available, held and the other asset, and the hold brought down to what the rest can
        still cost (``required``)."""
        o.rem -= qty
        fee = self._charge(acct, oid, o, maker, pair, notional, ref, out)
        quote_asset, base_asset = pair.quote, pair.base
        flow = self.flow  # (``_flow``, ``_bal`` and ``_cell``, inline: per side of a trade)
        cells = self.balances.get(acct)  # (its order's hold made one at least)
        if cells is None:
            cells = self.balances[acct] = {}
        if o.side == BUY:  # (a cell it makes is made in ``_cell``'s order: quote, then base)
            q = cells.get(quote_asset) or cells.setdefault(quote_asset, [0, 0])
            b = cells.get(base_asset) or cells.setdefault(base_asset, [0, 0])
            pay = notional + fee
            if o.rem:  # (``required`` of a spot buy, inline: per buy side of a trade)
                rc = o.cap * o.rem * pair.quote_per_tick_lot
                left = rc - (-(o.fee_num + rc * o.taker_bps) // _BPS) - o.fee_charged
            else:
                left = 0
            release = o.held - pay - left  # >= 0: see ``required``
            q[HELD] -= pay + release
            q[AVAIL] += release
            o.held = left
            b[AVAIL] += base
            flow[quote_asset] = flow.get(quote_asset, 0) - notional
            flow[base_asset] = flow.get(base_asset, 0) + base
        else:
            b = cells.get(base_asset) or cells.setdefault(base_asset, [0, 0])
            q = cells.get(quote_asset) or cells.setdefault(quote_asset, [0, 0])
            b[HELD] -= base
            o.held -= base
            q[AVAIL] += notional - fee
            flow[quote_asset] = flow.get(quote_asset, 0) + notional
            flow[base_asset] = flow.get(base_asset, 0) - base
        if not o.rem:
            self._close(acct, oid, o, pair, out, ref)  # (its release moves the same cells)
        seq = self.seq
        out.append((AE_BALANCE, seq + 1, acct, quote_asset, q[AVAIL], q[HELD], "trade", ref))
        out.append((AE_BALANCE, seq + 2, acct, base_asset, b[AVAIL], b[HELD], "trade", ref))
        self.seq = seq + 2

    def _perp_fill(self, acct: str, oid: str, o: HeldOrder, pair: Pair, qty: int,
                   out: list[tuple]) -> None:  # fmt: skip
        """One side of a perp pair's trade: the order's open qty only (it holds nothing; no
        fee is charged on perp fills yet, docs/perps.md)."""
        o.rem -= qty
        if not o.rem:
            self._close(acct, oid, o, pair, out, oid)

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
        if op == OP_MARGIN and type(cause) is int:  # (a margin move: ``Margins``)
            return None if self._margin_refused(cause, out) else f"margin {cause} not in flight"
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
        o = self.orders.get((account, symbol, oid))  # type: ignore[arg-type]  # a str: its pair was found
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
        if pair.perp:  # (it holds nothing)
            return None
        need = required(o, pair)
        asset = pair.quote if o.side == BUY else pair.base
        cell = self._cell(account, asset)
        diff = o.held - need
        short = None
        if diff < 0 and -diff > cell[AVAIL]:
            short = f"order {oid} needs {-diff} more units of {asset} than available"
            diff = -cell[AVAIL]
        if diff:
            cell[AVAIL] += diff
            cell[HELD] -= diff
            o.held -= diff
            self._bal(out, account, asset, "release" if diff > 0 else "hold", oid)
        return short

    def _close(
        self, account: str, oid: str, o: HeldOrder, pair: Pair, out: list[tuple], ref: str
    ) -> None:
        """The order ended: release what is left of its hold and forget it."""
        del self.orders[(account, o.symbol, oid)]
        mine = self.open_by[account]  # (``Ledger.open_by``, inline: once per order)
        del mine[(o.symbol, oid)]
        if not mine:
            del self.open_by[account]
        if o.held:
            asset = pair.quote if o.side == BUY else pair.base
            cell = self._cell(account, asset)
            cell[AVAIL] += o.held
            cell[HELD] -= o.held
            o.held = 0
            self._bal(out, account, asset, "release", ref)

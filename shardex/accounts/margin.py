"""Margin moves of an account shard: free balance of a perp pair's settle asset into the pair's
margin on its engine shard, and back (pure). A venue's "transfer to the futures wallet".

The engine shard that owns a perp pair keeps each account's collateral on it
(``shardex.engine.positions``); this shard keeps the money's other half, so that every unit of
an asset is always in exactly one place it can see:

* **In** (``amount > 0``): taken from ``available`` at once (refused ``insufficient_funds``
  beyond it), recorded as in flight (``margin_moves``, by the seq of its forward) and forwarded
  to the pair's engine shard as ``(OP_MARGIN, symbol, account, units)`` on the account link
  (journaled, sequenced, re-sent and deduplicated like an order). The engine's ``EV_MARGIN``
  comes back as ``S_MARGIN``: the amount moves from in flight to ``margin``. A refusal
  (``S_REJECTED`` naming the forward) gives it back to ``available``.
* **Out** (``amount < 0``): nothing moves here first; the engine decides (what may leave:
  ``positions.margin_free``, which includes realized PnL and funding) and its ``S_MARGIN``
  credits ``available``. A refusal changes nothing.

``margin[(account, symbol)]`` is the net amount moved in minus out (units of the settle
asset), negative once an account took out more than it put in (its profits).
``check_integrity`` counts it with the balances: per asset, balances + fees + Σ margin +
Σ in flight == deposits - withdrawals + net trade inflow; ``shardex audit`` compares Σ margin
per pair with the engine shards' collateral and fund.
"""

from __future__ import annotations

from typing import Any

from shardex.accounts.assets import MAX_UNITS
from shardex.accounts.ledger import AVAIL, Ledger, _f, _ident, _q, account_shard_for
from shardex.engine.book import IntegrityError
from shardex.engine.codes import (
    MAX_ID_LEN,
    OP_MARGIN,
    REJ_MALFORMED,
    REJ_NOT_PERP,
    REJ_OFF_GRID,
    REJ_OUT_OF_RANGE,
    REJ_WRONG_SHARD,
)
from shardex.wire.layouts import XFER_ACCOUNT, XFER_REF


class Margins(Ledger):
    """The ``margin`` command of ``AccountCore`` and the settlements that answer it."""

    def _margin(self, cmd: Any, out: list[tuple]) -> None:
        if len(cmd) != 5:
            return self._reject(_f(cmd, XFER_ACCOUNT), _f(cmd, XFER_REF),
                                "margin: expected 5 fields", REJ_MALFORMED, out)  # fmt: skip
        op, account, symbol, amount, ref = cmd
        refused = self._margin_refusal(account, symbol, amount, ref)
        if refused:
            return self._reject(account, ref, *refused, out)
        if self._seen_ref(ref, (op, account, symbol, amount), out):
            return None
        pair = self.table.pairs[symbol]
        asset = pair.quote
        if amount > 0:  # (in: taken now; out: credited when the engine shard answers)
            cell = self._found(account, asset)
            avail = cell[AVAIL] if cell else 0
            if amount > avail:
                return self._insufficient(account, ref, asset, avail, amount, out)
            cell[AVAIL] -= amount  # type: ignore[index]  # (amount > 0: the cell exists)
            self._bal(out, account, asset, "margin", ref)
        self._remember(ref, (op, account, symbol, amount))
        units = amount // pair.quote_per_tick_lot
        seq = self._forward(symbol, (OP_MARGIN, symbol, account, units), out)
        self.margin_moves[seq] = (account, symbol, amount)
        return None

    def _margin_refusal(self, account: object, symbol: object, amount: object,
                        ref: object) -> tuple[str, int] | None:  # fmt: skip
        """Why a margin move cannot be applied here (reason, code), or None."""
        if not _ident(account) or not _ident(ref):
            return f"account and ref must be strings of 1..{MAX_ID_LEN} chars", REJ_MALFORMED
        if not self.owns(account):
            return (f"account {account} belongs to account shard "
                    f"{account_shard_for(account, self.shards)}", REJ_WRONG_SHARD)  # fmt: skip
        pair = self.table.pairs.get(symbol) if type(symbol) is str else None
        if pair is None or not pair.perp:
            return f"margin: {_q(symbol, 40)} is not a perpetual market", REJ_NOT_PERP
        if type(amount) is not int:
            return "amount must be an integer number of units", REJ_MALFORMED
        if amount == 0 or abs(amount) > MAX_UNITS:
            return f"margin amount must be nonzero, within ±{MAX_UNITS} units", REJ_OUT_OF_RANGE
        if amount % pair.quote_per_tick_lot:
            unit = self.table.fmt(pair.quote, pair.quote_per_tick_lot)
            return f"margin amount must be a multiple of {unit} {pair.quote}", REJ_OFF_GRID
        return None

    def _margin_done(self, cmd: Any, out: list[tuple]) -> str | None:
        """``S_MARGIN``: the engine moved the margin of the forward ``cause``."""
        if len(cmd) != 8:
            return "margin: expected 8 fields"
        _, _, _, _, symbol, account, units, cause = cmd
        move = self.margin_moves.get(cause) if type(cause) is int else None
        if move is None or move[:2] != (account, symbol):
            return f"margin settlement for {_q(account, 70)}/{_q(symbol, 40)} that is not in flight"
        pair = self.table.pairs[symbol]
        if units * pair.quote_per_tick_lot != move[2]:
            return f"margin settlement of {_q(units, 20)} units for a move of {move[2]}"
        del self.margin_moves[cause]
        key = (account, symbol)
        net = self.margin.get(key, 0) + move[2]
        if net:
            self.margin[key] = net
        else:
            self.margin.pop(key, None)
        if move[2] < 0:
            self._cell(account, pair.quote)[AVAIL] -= move[2]
            self._bal(out, account, pair.quote, "margin", f"m{cause}")
        return None

    def _margin_refused(self, cause: int, out: list[tuple]) -> bool:
        """An engine refusal of the margin forward ``cause``: an in-move's amount back to
        available. False when ``cause`` is no margin move in flight."""
        move = self.margin_moves.pop(cause, None)
        if move is None:
            return False
        account, symbol, amount = move
        if amount > 0:
            asset = self.table.pairs[symbol].quote
            self._cell(account, asset)[AVAIL] += amount
            self._bal(out, account, asset, "release", f"m{cause}")
        return True

    def _check_margin(self) -> None:
        """IntegrityError unless every margin record and move in flight is of an account of
        this shard on a perp pair, and every move is nonzero."""
        pairs = self.table.pairs
        rows = [(a, s, v) for (a, s), v in self.margin.items()]
        for account, symbol, amount in [*rows, *self.margin_moves.values()]:
            pair = pairs.get(symbol)
            if pair is None or not pair.perp or not self.owns(account) or not amount:
                raise IntegrityError(f"margin of {account[:64]} on {symbol[:40]} does not "
                                     "belong here")  # fmt: skip

    def in_margin(self) -> dict[str, int]:
        """Per settle asset: Σ margin moved in - out (confirmed) + Σ in-moves in flight."""
        pairs = self.table.pairs
        total: dict[str, int] = {}
        for (_, symbol), amount in self.margin.items():
            asset = pairs[symbol].quote
            total[asset] = total.get(asset, 0) + amount
        for _, symbol, amount in self.margin_moves.values():
            if amount > 0:
                asset = pairs[symbol].quote
                total[asset] = total.get(asset, 0) + amount
        return total

    def margin_audit(self) -> dict[str, Any]:
        """For ``shardex audit``: ``margin`` per settle asset (``in_margin``, units of the
        asset), and per perp pair ``[net moved in - out as the engine confirmed it, in units
        of tick × lot; moves in flight]`` (``margin_pairs``)."""
        pairs = self.table.pairs
        per: dict[str, list[int]] = {}
        for (_, symbol), amount in self.margin.items():
            row = per.setdefault(symbol, [0, 0])
            row[0] += amount // pairs[symbol].quote_per_tick_lot
        for _, symbol, _ in self.margin_moves.values():
            per.setdefault(symbol, [0, 0])[1] += 1
        return {"margin": self.in_margin(), "margin_pairs": per}

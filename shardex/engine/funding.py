"""Funding of perp pairs (pure: no sockets, no clock, no I/O; part of the compiled build).

Every index (``OP_INDEX``) a perp pair applies is one **premium sample**: ``mark − index``
in ticks. Every ``funding_interval_s`` of exchange time the pair pays funding: the payment
per lot is the samples' average premium (in units: a tick × a lot per lot), clamped to
``± funding_cap × index``; longs pay it to shorts when it is positive, shorts to longs when it
is negative (a mark above the index pulls it down: the long side pays). It is kept exact in
millionths of a unit per lot (``SCALE``) and added to the pair's **cumulative funding index**
(Σ per-lot payments since the pair began: drift's ``cumulative funding rate``).

The payment is a journaled command, ``(OP_FUNDING, ts)``, that the shard's leader journals
after a batch's ``OP_TIME`` when a pair's payment time has come (``shardex.node
.expiry_sweep``, like the expiry sweep): so replay, a standby and a recovery pay the very same
amounts at the same seqs. Each position pays or receives ``size × per-lot`` millionths of a
unit, rounded to whole units **against the account**: a payer pays the ceiling, a receiver gets
the floor. What the rounding keeps (never negative, less than one unit per position) goes into
the pair's insurance fund (``Positions.fund``), and ``remainder`` counts it; so the payments
and the remainder sum to zero exactly, and Σ equity + fund stays Σ margin moved in. An
oracle stale at payment time (older than
``oracle_staleness_ms``) or an interval without samples pays nothing: funding freezes. One
``(EV_FUNDING, seq, symbol, per_lot, cumulative, remainder)`` per payment.
"""

from __future__ import annotations

from typing import Any

from shardex.engine.codes import EV_FUNDING, REJ_MALFORMED, Event
from shardex.engine.positions import FUNDING, SIZE, Positions

SCALE = 1_000_000  # the funding index's millionths of a unit per lot
Refusal = tuple[str, int]


def sample(pos: Positions, premium: int, now: int, interval_ms: int) -> None:
    """One premium sample (``mark − index`` ticks) at exchange time ``now``; the first one
    schedules the pair's first payment (at the next whole interval)."""
    pos.premium += premium
    pos.samples += 1
    if not pos.due:
        pos.due = (now // interval_ms + 1) * interval_ms


def per_lot(pos: Positions, index: int, cap: Any) -> int:
    """The interval's payment per lot (millionths of a unit; > 0: longs pay): the average
    premium, clamped to ``± cap × index`` (floor division: exact and deterministic)."""
    num, den = cap.as_integer_ratio()
    limit = index * SCALE * int(num) // int(den)
    average = pos.premium * SCALE // pos.samples
    return max(-limit, min(limit, average))


def settle(pos: Positions, rate: int) -> int:
    """Pay ``rate`` per lot between every position of the pair: payers round up, receivers
    down; returns the units the rounding kept (>= 0)."""
    kept = 0
    for row in pos.accounts.values():
        owed = row[SIZE] * rate  # (> 0: this account pays)
        if owed > 0:
            paid = -(-owed // SCALE)
            row[FUNDING] -= paid
            kept += paid
        elif owed < 0:
            got = -owed // SCALE
            row[FUNDING] += got
            kept -= got
    return kept


def due_pairs(eng: Any, ts: int) -> list[Any]:
    """The perp books whose payment time ``ts`` (exchange time) has reached, by symbol."""
    return [b for _, b in sorted(eng.books.items())
            if b.positions is not None and b.positions.due and ts >= b.positions.due]  # fmt: skip


def pay_funding(eng: Any, cmd: Any, out: list[Event]) -> Refusal | None:
    """Apply ``(OP_FUNDING, ts)``: every due pair pays (``settle``) or, stale or without
    samples, freezes; each moves its next payment time past ``ts``."""
    if len(cmd) != 2 or type(cmd[1]) is not int:
        return "funding: expected (op, ts)", REJ_MALFORMED
    ts = cmd[1]
    for book in due_pairs(eng, ts):
        pos: Positions = book.positions
        perp = book.market.perp
        interval = perp.funding_interval_s * 1000
        o = book.oracle
        live = o is not None and not o.stale(ts, perp.oracle_staleness_ms)
        if live and pos.samples:
            rate = per_lot(pos, o.index, perp.funding_cap)
            pos.cumulative += rate
            kept = settle(pos, rate)
            pos.remainder += kept
            pos.fund += kept
            eng.seq = seq = eng.seq + 1
            out.append((EV_FUNDING, seq, book.symbol, rate, pos.cumulative, pos.remainder))
        pos.premium = pos.samples = 0
        pos.due = (ts // interval + 1) * interval
    return None


def funding_read(book: Any) -> dict[str, Any] | None:
    """A perp pair's funding state for the shard's market read (None: a spot pair), with its
    insurance fund (units) and the take-overs a stale oracle held back (``frozen``)."""
    pos = book.positions if book is not None else None
    if pos is None:
        return None
    m = book.market
    unit = m.tick * m.lot
    return {"cumulative": format(pos.cumulative * unit / SCALE, "f"), "next_ms": pos.due,
            "samples": pos.samples, "remainder": str(pos.remainder * unit),
            "fund": str(pos.fund * unit), "frozen": pos.frozen}  # fmt: skip

"""The liquidation index (``shardex.engine.liqindex``) against the full scan it replaces
(``liquidation.breaching``): a row's key is exactly its breach point, on random rows and
margin fractions; an index kept up to date through random row changes finds exactly the
breaching accounts at any mark; and inside the engine, over random perp sessions (fills,
margin moves, funding, take-overs and ADL), the index the ticks use agrees with the scan
after every command at marks around the current one."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shardex.engine.codes import (
    BUY,
    IOC,
    OP_CANCEL_ALL,
    OP_FUNDING,
    OP_INDEX,
    OP_MARGIN,
    OP_TIME,
    SELL,
)
from shardex.engine.engine import Engine
from shardex.engine.liqindex import LiqIndex, keys
from shardex.engine.liquidation import below, breaching, maintenance
from shardex.engine.positions import SIZE, equity
from tests.support.perps import OPEN, PERP, markets, order

MM_NUM, MM_DEN = 1, 20  # (``tests.support.perps``' 5 %)
TRADERS = "abcd"

rows = st.lists(st.integers(-10**12, 10**12), min_size=5, max_size=5).map(
    lambda r: [r[0] // 10**6, *r[1:]])  # (size: ±10**6 lots, flat included)
fractions = st.tuples(st.integers(1, 999), st.integers(2, 1000)).filter(lambda f: f[0] < f[1])
marks = st.integers(1, 10**7)


@settings(max_examples=200, deadline=None)
@given(rows, fractions, marks)
def test_a_rows_key_is_exactly_where_it_breaches(row: list[int], frac: tuple, mark: int) -> None:
    num, den = frac
    side, key = keys(row, num, den)
    below_mm = bool(row[SIZE]) and equity(row, mark) < maintenance(row[SIZE], mark, num, den)
    crossed = (side > 0 and mark < key) or (side < 0 and mark > key)
    assert crossed == below_mm
    if side:  # (and the key is the boundary: one step past it breaches, at it does not)
        past = key - 1 if side > 0 else key + 1
        if past >= 1:
            assert breaching({"a": row}, past, num, den) == ["a"]
        if key >= 1:
            assert breaching({"a": row}, key, num, den) == []


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdefghij"), rows, max_size=10), fractions,
       st.lists(st.tuples(st.sampled_from("abcdefghijk"), rows, marks), max_size=30))
def test_an_index_kept_up_to_date_finds_exactly_the_breaching(accounts: dict, frac: tuple,
                                                               changes: list) -> None:
    num, den = frac
    idx = LiqIndex(accounts, num, den)
    for account, row, mark in changes:
        accounts[account] = row
        idx.rekey(accounts, [account])
        got = idx.candidates(mark)
        assert len(got) == len(set(got))
        assert sorted(got) == breaching(accounts, mark, num, den)


# a session's steps: (kind, trader, side, n, m)
steps = st.tuples(st.sampled_from(("take", "take", "rest", "index", "crash", "crash", "margin",
                                   "wait", "pull")),
                  st.sampled_from(TRADERS), st.sampled_from((BUY, SELL)), st.integers(1, 8),
                  st.integers(-12, 12))  # fmt: skip


def _session(spec: list) -> list[tuple]:
    """Commands of a random session: a market maker's quotes, traders taking them (IOC) and
    resting orders away from the index (makers a take-over may hit), index moves and crashes
    (take-overs, cascades, ADL once the maker leaves), margin in and out, exchange time passing
    (funding, a stale oracle)."""
    cmds = [(OP_TIME, 1_000), (OP_INDEX, PERP, OPEN), (OP_MARGIN, PERP, "mm", 10**10),
            *((OP_MARGIN, PERP, t, 170_000) for t in TRADERS),
            *(order(f"q{k}{s}", "mm", s, OPEN + (1 if s else -1) * k * 400, 20)
              for k in range(1, 5) for s in (BUY, SELL)),
            *(order(f"o{t}", t, BUY if t < "c" else SELL, OPEN * (1005 if t < "c" else 995) //
                    1000, 5, IOC) for t in TRADERS)]  # fmt: skip (a, b long; c, d short)
    index, now = OPEN, 1_000
    for n, (kind, who, side, k, m) in enumerate(spec):
        if kind == "take":
            cmds.append(order(f"t{n}", who, side, index * (1005 if side == BUY else 995) // 1000,
                              k, IOC))  # fmt: skip
        elif kind == "rest":
            cmds.append(order(f"r{n}", who, side, index + (-k if side == BUY else k) * 200, k))
        elif kind in ("index", "crash"):
            index = max(1_000, index + m * 200 if kind == "index" else index * (100 + m) // 100)
            now += 4_000
            cmds += [(OP_TIME, now), (OP_INDEX, PERP, index)]
        elif kind == "margin":
            cmds.append((OP_MARGIN, PERP, who, m * 10_000 or 1))
        elif kind == "wait":
            now += k * 10_000
            cmds.append((OP_TIME, now))
        else:
            cmds.append((OP_CANCEL_ALL, PERP, f"x{n}", "mm"))
    return cmds


@settings(max_examples=20, deadline=None)
@given(st.lists(steps, min_size=10, max_size=40))
def test_the_engines_index_agrees_with_the_full_scan(spec: list) -> None:
    eng = Engine(markets(funding_interval_s=60, oracle_staleness_ms=30_000))
    for cmd in _session(spec):
        batch = [cmd]
        pos = eng.books[PERP].positions if PERP in eng.books else None
        if cmd[0] == OP_TIME and pos is not None and pos.due and pos.due <= cmd[1]:
            batch.append((OP_FUNDING, cmd[1]))
        eng.apply_many(batch)
        book = eng.books.get(PERP)
        if book is None or book.oracle is None:
            continue
        mark = book.oracle.mark
        for m in (mark, mark * 97 // 100, mark * 103 // 100, mark // 2, mark * 2):
            pos = book.positions
            assert below(pos, m, MM_NUM, MM_DEN) == breaching(pos.accounts, m, MM_NUM, MM_DEN)

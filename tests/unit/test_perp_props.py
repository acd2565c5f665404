"""Property tests of one perp pair against a small reference model (pure engine, hypothesis;
docs/perps.md): random orders, margin moves and index paths, with exchange time passing so
that funding is paid and the oracle sometimes goes stale.

The model rebuilds every account from the events alone (trades, ADL closes, margin moves,
funding payments, liquidation settlements): its size and its cash (equity minus size ×
mark), and the insurance fund. After every command the engine must agree with it, and:

* funding: each payment's per-account amounts and the remainder the fund keeps sum to zero;
* after a live index, no position is below maintenance unless it was taken over in that
  index and the book was too thin to finish (then it is solvent at the mark, and it is
  taken over again at the next live index while it stays below);
* no account's equity is negative after a live index (bankrupt positions are deleveraged),
  and a negative collateral only follows a liquidation that moved a surplus to the fund;
  ``uncovered`` stays 0;
* replay of the journaled commands gives the same events, and a snapshot taken midway,
  restored and fed the rest, ends byte-identical.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shardex.engine.codes import (
    BUY,
    EV_ADL,
    EV_FUNDING,
    EV_LIQUIDATION,
    EV_MARGIN,
    EV_TRADE,
    IOC,
    OP_CANCEL_ALL,
    OP_FUNDING,
    OP_INDEX,
    OP_MARGIN,
    OP_NEW,
    OP_TIME,
    SELL,
)
from shardex.engine.engine import Engine
from shardex.engine.funding import SCALE
from shardex.engine.liquidation import breaching
from shardex.engine.positions import COLLATERAL, SIZE, equity, pair_totals, pair_violations
from shardex.wire.pub import check_event
from tests.support.perps import OPEN, PERP, markets, order

RULES = {"funding_interval_s": 60, "oracle_staleness_ms": 5_000}
TRADERS = ("a", "b", "c", "d")
MM_NUM, MM_DEN = 1, 20

_take = st.tuples(st.just("take"), st.sampled_from(TRADERS), st.sampled_from((BUY, SELL)),
                 st.integers(1, 25))
_pair = st.tuples(st.just("pair"), st.sampled_from(TRADERS), st.sampled_from(TRADERS),
                  st.sampled_from((BUY, SELL)), st.integers(1, 15), st.integers(-10, 10))
_move = st.tuples(st.just("index"), st.integers(-40, 40), st.sampled_from((700, 1_500, 6_000)))
_crash = st.tuples(st.just("crash"), st.sampled_from((-1, 1)), st.integers(4, 20))
step = st.one_of(
    _take, _take, _pair, _pair, _move, _crash, _crash,
    st.tuples(st.just("rest"), st.sampled_from(TRADERS), st.sampled_from((BUY, SELL)),
              st.integers(1, 40), st.integers(1, 15)),
    st.tuples(st.just("mm"), st.sampled_from((BUY, SELL)), st.integers(1, 60),
              st.integers(1, 50)),
    st.tuples(st.just("wait"), st.integers(20_000, 40_000)),
    st.tuples(st.just("drift"), st.integers(-3, 3), st.integers(5, 16)),
    st.just(("pull",)),
    st.tuples(st.just("margin"), st.sampled_from(TRADERS), st.integers(-300_000, 900_000)),
)  # fmt: skip


class Model:
    """Each account's size and cash, and the fund, from the events alone."""

    def __init__(self) -> None:
        self.size: dict[str, int] = {}
        self.cash: dict[str, int] = {}
        self.fund = self.remainder = self.moved = 0
        self.owner: dict[str, str] = {}  # order id → account
        self.surplus: set[str] = set()  # accounts a liquidation took a surplus from

    def _move(self, account: str, q: int, price: int) -> None:
        self.size[account] = self.size.get(account, 0) + q
        self.cash[account] = self.cash.get(account, 0) - q * price

    def apply(self, cmd: tuple, events: list) -> None:
        if cmd[0] == OP_NEW:
            self.owner[cmd[2]] = cmd[3]
        pending: list[tuple] = []  # (a liquidation's own trades: its account comes after)
        for ev in events:
            kind = ev[0]
            if kind == EV_TRADE:
                q = ev[4] if ev[7] == BUY else -ev[4]
                if ev[5].startswith("liq:"):
                    pending.append((q, ev[3], ev[6]))
                else:
                    self._move(self.owner[ev[5]], q, ev[3])
                    self._move(self.owner[ev[6]], -q, ev[3])
            elif kind == EV_LIQUIDATION:
                for q, price, maker in pending:
                    self._move(ev[3], q, price)
                    self._move(self.owner[maker], -q, price)
                pending = []
                self.cash[ev[3]] -= ev[7]  # (settled: > 0 into the fund, < 0 out of it)
                self.fund += ev[7]
                if ev[7] > 0:
                    self.surplus.add(ev[3])
            elif kind == EV_ADL:  # (account closes ``closed``: it buys when < 0)
                self._move(ev[3], -ev[5], ev[6])
                self._move(ev[4], ev[5], ev[6])
            elif kind == EV_MARGIN:
                self.cash[ev[3]] = self.cash.get(ev[3], 0) + ev[4]
                self.moved += ev[4]
            elif kind == EV_FUNDING:
                self._pay(ev[3], ev[5])

    def _pay(self, rate: int, remainder: int) -> None:
        """One payment: each account pays the ceiling of ``size × rate`` (a receiver's is
        negative: the floor of what it gets); Σ payments = the remainder's growth >= 0."""
        total = 0
        for account, size in self.size.items():
            paid = -(-size * rate // SCALE)
            self.cash[account] -= paid
            total += paid
        assert 0 <= total == remainder - self.remainder  # (payments + remainder sum to 0)
        self.remainder = remainder
        self.fund += total


def _commands(spec: list) -> list[tuple]:
    """The session's commands: traders' IOC orders against the market maker's quotes,
    trades between two traders (one rests, the other takes), resting orders away from the
    index (makers a liquidation may hit), index moves, crashes (percent) and drifts (many
    indexes 4 s apart), waits without an index (funding comes due; the next index follows
    a stale one), the market maker pulling its orders (a thin book), margin moves."""
    cmds = [(OP_TIME, 1_000), (OP_INDEX, PERP, OPEN), (OP_MARGIN, PERP, "mm", 10**10),
            *((OP_MARGIN, PERP, a, 700_000) for a in TRADERS),
            *(order(f"q{k}{side}", "mm", side, OPEN + (k if side else -k) * 300, 20)
              for k in range(1, 6) for side in (BUY, SELL))]  # fmt: skip
    index, now = OPEN, 1_000
    for n, s in enumerate(spec):
        kind = s[0]
        if kind == "take":
            price = index * (101 if s[2] == BUY else 99) // 100
            cmds.append(order(f"t{n}", s[1], s[2], price, s[3], IOC))
        elif kind == "pair" and s[1] != s[2]:
            price = max(1, index + s[5] * 250)
            cmds += [order(f"r{n}", s[1], s[3] ^ 1, price, s[4]),
                     order(f"p{n}", s[2], s[3], price, s[4], IOC)]  # fmt: skip
        elif kind in ("rest", "mm"):
            who, side, off, qty = ("mm", *s[1:]) if kind == "mm" else s[1:]
            price = index - off * 250 if side == BUY else index + off * 250
            cmds.append(order(f"{kind}{n}", who, side, max(1, price), qty))
        elif kind in ("index", "crash"):
            index = index + s[1] * 250 if kind == "index" else index * (100 + s[1] * s[2]) // 100
            now += s[2] if kind == "index" else 1_000
            cmds += [(OP_TIME, now), (OP_INDEX, PERP, max(1_000, index))]
        elif kind == "drift":  # (indexes 4 s apart: funding comes due on a live oracle)
            for _ in range(s[2]):
                index, now = index + s[1] * 100, now + 4_000
                cmds += [(OP_TIME, now), (OP_INDEX, PERP, max(1_000, index))]
        elif kind == "pull":  # (the market maker leaves: a thin book, ADL's case)
            cmds.append((OP_CANCEL_ALL, PERP, f"x{n}", "mm"))
        elif kind == "wait":
            now += s[1]
            cmds.append((OP_TIME, now))
        elif kind == "margin":
            cmds.append((OP_MARGIN, PERP, s[1], s[2]))
    return cmds


def _run(eng: Engine, cmds: list[tuple], model: Model) -> tuple[list, list[tuple]]:
    """Apply ``cmds`` like a shard's leader: after each ``OP_TIME``, ``OP_FUNDING`` when a
    payment is due. Checks the model and the invariants after each; returns (events,
    the journaled commands)."""
    events: list = []
    journal: list[tuple] = []
    mkts = eng.markets
    for cmd in cmds:
        batch = [cmd]
        if cmd[0] == OP_TIME:
            pos = eng.books[PERP].positions if PERP in eng.books else None
            if pos is not None and pos.due and pos.due <= cmd[1]:
                batch.append((OP_FUNDING, cmd[1]))
        for c in batch:
            live = _fresh(eng, c)
            out = eng.apply_many([c])
            journal.append(c)
            events += out
            assert all(check_event(ev, mkts) for ev in out), out
            model.apply(c, out)
            _check(eng, model, c, out, live)
    return events, journal


def _fresh(eng: Engine, cmd: tuple) -> bool:
    book = eng.books.get(PERP)
    o = book.oracle if book is not None else None
    return cmd[0] == OP_INDEX and o is not None and eng.ts - o.ts <= RULES["oracle_staleness_ms"]


def _check(eng: Engine, model: Model, cmd: tuple, out: list, live: bool) -> None:
    book = eng.books.get(PERP)
    if book is None or book.oracle is None:
        return
    pos, mark = book.positions, book.oracle.mark
    assert pos.fund == model.fund >= 0 and pos.uncovered == 0
    # what `shardex audit` checks of the pair: its zero sums, and that what it holds (collateral,
    # funding, the fund) is exactly the margin moved in - out
    assert pair_violations(pair_totals(pos), model.moved) == [], (pair_totals(pos), model.moved)
    for account, row in pos.accounts.items():
        size = model.size.get(account, 0)
        assert row[SIZE] == size, (account, row, size)
        assert equity(row, mark) == model.cash.get(account, 0) + size * mark, account
        if row[COLLATERAL] < 0:
            assert account in model.surplus
    if cmd[0] != OP_INDEX or not live:
        return
    taken = {ev[3] for ev in out if ev[0] == EV_LIQUIDATION}
    for account in breaching(pos.accounts, mark, MM_NUM, MM_DEN):
        assert account in taken  # (retaken at every live index while below)
        assert equity(pos.accounts[account], mark) > 0  # (the book was too thin, solvent)
    assert all(equity(r, mark) >= 0 for r in pos.accounts.values())


@settings(max_examples=35, deadline=None)
@given(st.lists(step, min_size=12, max_size=40), st.integers(0, 60))
def test_random_perp_sessions_match_the_model_and_replay(spec: list, cut: int) -> None:
    mkts = markets(**RULES)
    cmds = _commands(spec)
    eng = Engine(mkts)
    events, journal = _run(eng, cmds, Model())
    assert Engine(mkts).apply_many(journal) == events
    cut = min(cut, len(journal))
    first = Engine(mkts)
    head = first.apply_many(journal[:cut])
    restored = Engine.restore(first.snapshot(), mkts)
    assert head + restored.apply_many(journal[cut:]) == events
    assert restored.snapshot() == eng.snapshot()

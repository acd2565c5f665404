"""The opening-order margin requirement (``positions.requirement``) against its definition,
computed from every order of the book (not the per-account index the check walks): after
random orders, fills, cancels and amends, for every account, at marks around and far from
the orders' prices, with and without an extra order and an amended order left out
(docs/perps.md, "Opening orders")."""

from __future__ import annotations

from fractions import Fraction
from math import ceil

from hypothesis import given, settings
from hypothesis import strategies as st

from shardex.engine.codes import BUY, IOC, OP_AMEND, OP_CANCEL, OP_INDEX, OP_MARGIN, OP_TIME, SELL
from shardex.engine.engine import Engine
from shardex.engine.positions import requirement
from tests.support.perps import OPEN, PERP, markets, order

IM = Fraction(1, 10)  # (``tests.support.perps``' initial margin)
WHO = "abc"
acts = st.tuples(st.sampled_from(("rest", "rest", "take", "cancel", "amend")), st.sampled_from(WHO),
                 st.sampled_from((BUY, SELL)), st.integers(-20, 20), st.integers(1, 9),
                 st.integers(0, 30))  # fmt: skip


def _defined(eng: Engine, account: str, mark: int, extra: tuple | None, skip: str) -> int:
    """``ceil(IM × (|size| × mark + Σ qty × max(price, mark))) + Σ loss`` over the account's
    live orders on the pair (but ``skip``) and ``extra``."""
    book = eng.books[PERP]
    row = book.positions.accounts.get(account)
    orders = [(o.side, o.qty, o.price) for o in book.orders.values()
              if o.account == account and o.id != skip] + ([extra] if extra else [])  # fmt: skip
    notional = abs(row[0]) * mark if row else 0
    notional += sum(q * max(p, mark) for _, q, p in orders)
    loss = sum(q * (p - mark) if s == BUY else q * (mark - p) for s, q, p in orders
               if (s == BUY and p > mark) or (s == SELL and p < mark))  # fmt: skip
    return ceil(IM * notional) + loss


@settings(max_examples=40, deadline=None)
@given(st.lists(acts, min_size=5, max_size=40), st.lists(st.integers(-30, 30), min_size=1,
                                                          max_size=4))
def test_the_requirement_is_its_definition_over_the_books_orders(spec: list,
                                                                 marks: list) -> None:
    eng = Engine(markets())
    eng.apply_many([(OP_TIME, 1_000), (OP_INDEX, PERP, OPEN),
                    *((OP_MARGIN, PERP, w, 10**9) for w in WHO)])  # fmt: skip
    for n, (kind, who, side, off, qty, ref) in enumerate(spec):
        price = OPEN + off * 500
        if kind == "rest":
            eng.apply_many([order(f"o{n}", who, side, price, qty)])
        elif kind == "take":
            eng.apply_many([order(f"o{n}", who, side, price, qty, IOC)])
        elif kind == "cancel":
            eng.apply_many([(OP_CANCEL, PERP, f"o{ref}", who)])
        else:
            eng.apply_many([(OP_AMEND, PERP, f"o{ref}", who, qty, price)])
    book = eng.books[PERP]
    for m in marks:
        mark = OPEN + m * 500
        for who in WHO:
            mine = [o.id for o in book.orders.values() if o.account == who]
            extras = (None, (BUY, 3, mark + 700), (SELL, 2, mark - 900), (BUY, 1, mark),
                      (SELL, 4, mark))  # (on the mark: the boundary of both branches)
            for extra, skip in [(e, "") for e in extras] + [(extras[2], mine[0] if mine else "")]:
                got = requirement(book, who, mark, extra, skip)
                assert got == _defined(eng, who, mark, extra, skip), (who, mark, extra, skip)

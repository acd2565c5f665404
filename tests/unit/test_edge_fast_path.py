"""The edge's fast path for new orders gives the full checks' verdict, for any 11 fields.

``edge_command`` passes a well-formed new order without the loop of its full checks
(``_plain_new``): an optimisation of the busiest line of an engine shard, which must never let
through what the full checks refuse, nor refuse what they pass. Generated commands mix valid
fields with every kind of shape the full checks treat differently (non-ASCII and over-long
strings, floats, bools where ints go, an int or a bool op, None, nested arrays).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shardex.engine.codes import BUY, GTC, LIMIT, OP_CANCEL, OP_NEW, OP_REJECT
from shardex.wire.protocol import MAX_SYMBOL_LEN, _edge_checked, _plain_new, edge_command
from tests.support.depth import examples

VALID = (OP_NEW, "BTC-USD", "c1-7", "a1", BUY, LIMIT, 1_000_000, 3, GTC, False, 0)

_strings = st.sampled_from(["", "BTC-USD", "x" * MAX_SYMBOL_LEN, "x" * (MAX_SYMBOL_LEN + 1),
                            "é", "a" * 64, "a" * 65, "ü" * 40, "\udcff"])  # fmt: skip
_odd = st.sampled_from([None, True, False, 0, 1, -1, 2**70, 1.5, float("nan"), b"BTC-USD",
                        (1, 2), [], {}, OP_NEW, OP_CANCEL, OP_REJECT])  # fmt: skip
_field = st.one_of(_strings, _odd)


@st.composite
def commands(draw: Any) -> tuple[Any, ...]:
    """VALID with some of its 11 fields replaced by anything of the kinds above."""
    cmd = list(VALID)
    for i in draw(st.sets(st.integers(0, len(VALID) - 1), max_size=4)):
        cmd[i] = draw(_field)
    return tuple(cmd)


@settings(max_examples=examples(300), deadline=None)
@given(commands())
def test_fast_path_gives_the_full_checks_verdict(cmd: tuple[Any, ...]) -> None:
    got = edge_command(cmd)
    assert got == _edge_checked(cmd)
    if _plain_new(*cmd):
        assert got is cmd  # passed unchanged, as the full checks pass it


def test_fast_path_takes_the_common_order_and_refuses_nothing_itself() -> None:
    assert _plain_new(*VALID) and edge_command(VALID) is VALID
    market = VALID[:6] + (None,) + VALID[7:]  # a market order has no price
    assert _plain_new(*market) and edge_command(market) is market
    # not plain, and then the full checks decide: passed (a float field) or refused
    floaty = VALID[:10] + (1.0,)
    assert not _plain_new(*floaty) and edge_command(floaty) is floaty
    bool_op = (True, *VALID[1:])
    assert not _plain_new(*bool_op) and edge_command(bool_op)[0] == OP_REJECT
    wide = VALID[:2] + ("é" * 40,) + VALID[3:]  # 40 chars, 80 bytes: over the id limit
    assert not _plain_new(*wide) and edge_command(wide)[0] == OP_REJECT

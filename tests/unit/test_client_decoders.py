"""The SDK's socket-free core never raises on garbage: any reply (error, results, events of
any shape) is stored, decoded and turned into results without an exception, and the read
decoders raise only ``ShardexError``. Pure: no socket, no process (the SDK against a stand-in
and against a cluster is tests/process/test_client.py and tests/unit/test_inproc_*.py)."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardex.client import EXECUTED, NOT_EXECUTED, UNKNOWN, ClientCore, Result, ShardexError
from shardex.engine import Market
from shardex.engine.codes import OP_CANCEL, OP_NEW, OP_REJECT
from shardex.wire.protocol import decode_reply
from tests.support.depth import examples

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.sampled_from(["BTC-USD", "ETH-USD", "live", "filled", "cancelled", "unknown", "user"]),
    st.integers(min_value=0, max_value=5),
)
# Garbage of any shape: nested tuples and dicts up to 10 leaves (the decoders check each level's
# type, so depth and every kind at every level is what reaches their branches; with 30 leaves
# drawing the values was nine tenths of these tests' time).
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6).map(tuple),
        st.dictionaries(
            st.one_of(
                st.sampled_from(
                    ["state", "symbol", "id", "seq", "side", "price", "qty", "filled", "trades"]
                ),
                st.text(max_size=5),
            ),
            inner,
            max_size=8,
        ),
    ),
    max_leaves=10,
)
# event-shaped tuples: right kind and length, random fields (the likeliest garbage to slip through)
events = st.integers(min_value=0, max_value=4).flatmap(
    lambda k: st.lists(scalars, min_size=3, max_size=9).map(lambda xs: (k, *xs))
)


def _core() -> ClientCore:
    core = ClientCore("tcp://127.0.0.1:5555", timeout=1.0)
    core.shards = 2
    return core


def _ok_result(r: Result) -> None:
    assert isinstance(r, Result)
    if r.error is not None:
        assert isinstance(r.error, str) and r.error
        assert r.events == []
    for e in r.events:
        for k in ("price", "qty"):
            if k in e:
                assert isinstance(e[k], Decimal) and e[k].is_finite()
    assert r.fate in (EXECUTED, NOT_EXECUTED, UNKNOWN)


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(values, st.none(), st.text(max_size=10)),
    st.one_of(values, st.lists(st.lists(st.one_of(events, values), max_size=4), max_size=4)),
)
def test_store_and_decode_never_raise(error: Any, results: Any) -> None:
    core = _core()
    idx = [0, 1, 2]
    out: list = [None] * 3
    core.store(idx, error, results, out)
    raw = core.raw_events(out)
    assert all(isinstance(e, str) or e is None for e, _ in raw)
    cmds = [{"op": "new"}] * 3
    tuples = [(OP_NEW, "BTC-USD", "i", "a")] * 3
    decoded = core.decode(out)
    for r in core.results(cmds, decoded):
        _ok_result(r)
    targets = core.fate_targets(tuples, decoded)
    fates = {i: core.fate_of(tuples[i], None, results) for i in targets}
    for r in core.results(cmds, decoded, fates):
        _ok_result(r)


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(values, st.binary(max_size=64)))
def test_read_decoders_raise_only_shardex_error(value: Any) -> None:
    core = _core()
    try:
        payload = value if isinstance(value, bytes) else msgpack.packb(value, use_bin_type=True)
    except (OverflowError, ValueError):
        payload = b"\xc1"  # msgpack cannot carry ints beyond 64 bits: a never-used byte instead
    error, results = decode_reply(payload)
    for fn in (
        lambda: core.read_result(error, results, "shard 0"),
        lambda: core.decimal_book(core.read_result(error, results, "shard 0")),
        lambda: core.order_status_map(value),
        lambda: core.decimal_book(value if isinstance(value, dict) else {}),
        lambda: core.apply_topology(error, results),
    ):
        try:
            fn()
        except ShardexError as exc:
            assert str(exc)
    core.learn_markets_reply(error, results)  # never raises; markets stay a usable table
    assert all(isinstance(m, Market) for m in core.markets.values())
    for cmd in ((OP_NEW, "BTC-USD", "i", "a"), (OP_CANCEL, "BTC-USD", "i", "a")):
        fate, status = core.fate_of(cmd, None, value)
        assert fate in (EXECUTED, NOT_EXECUTED, UNKNOWN)
        assert status is None or isinstance(status, dict)


def test_decoders_examples_of_garbage() -> None:
    core = _core()
    out: list = [None] * 2
    core.store([0, 1], None, ([(1, 5, "BTC-USD", math.nan, 1, "a", "b", 0, 1)], [(9,)]), out)
    decoded = core.decode(out)
    assert decoded[0][0].startswith("malformed reply") and decoded[1][0].startswith("malformed")
    core.store([0, 1], None, ([(1, 5, "BTC-USD", 2**80, 1, "a", "b", 0, 1)], ()), out)
    assert core.decode(out)[0][0].startswith("malformed reply")
    core.store([0, 1], 12, None, out)
    assert out[0][0] == "malformed reply: batch error is not a non-empty string"
    core.store([0, 1], None, [()], out)
    assert "count does not match" in out[1][0]
    core.store([0, 1], "x" * 10_000, None, out)
    assert len(out[0][0]) <= 300
    with pytest.raises(ShardexError, match="malformed"):
        core.order_status_map({"state": "live", "symbol": "BTC-USD", "id": "a", "seq": 1.5})
    with pytest.raises(ShardexError, match="malformed"):
        core.decimal_book({"symbol": "BTC-USD", "bids": [(1, math.inf, 1)]})


def test_op_reject_tuple_is_left_alone_by_fate_queries() -> None:
    core = _core()
    decoded = [("timeout after 1s", [])]
    assert core.fate_targets([(OP_REJECT, "BTC-USD", "i", "bad")], decoded) == []

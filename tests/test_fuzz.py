"""Untrusted input, property-tested: any msgpack value in any position of a request.

For every generated payload: nothing raises out of ``ShardCore.handle``, the router's decisions,
the reply decoder or the edge; the reply is bounded; the journal and the events only ever hold
bounded records; and garbage changes no book (every write that is not a valid command is a
``rejected`` event and nothing else).
"""

from __future__ import annotations

import math

import msgpack
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shardex.engine import DEFAULT_MARKETS
from shardex.engine.codes import EV_ACCEPTED, EV_REJECTED, OP_NEW
from shardex.node.router import Router, RouterConfig
from shardex.node.shard import ShardCore
from shardex.wire.protocol import (
    BATCH,
    BATCH_REPLY_WIDTH,
    BATCH_REQUEST_WIDTH,
    MAX_EVENTS_REPLY_BYTES,
    MAX_ID_LEN,
    MAX_SYMBOL_LEN,
    VERSION,
    decode_batch,
    decode_reply,
    edge_command,
    encode_request,
    quote,
    unpackb,
)

VALID = (OP_NEW, "BTC-USD", "o-1", "alice", 0, 0, 3_000_000, 10, 0, False, 0)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=80),
    st.text(min_size=1000, max_size=3000),  # very long strings
    st.binary(max_size=80),
    st.sampled_from(["BTC-USD", "ETH-USD", "o-1", "alice", "", "NOPE-USD"]),
    st.integers(min_value=-2, max_value=20),  # plausible ops, sides, tifs
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def payloads(draw) -> tuple[bytes, str | None]:
    """A request payload with garbage in one chosen position (or everywhere), and the id of the
    new order it is when the garbage happens to make a valid order (else None).

    The spec, written here independently of the decoder: a single-field mutation of ``VALID``
    is a valid new order exactly when only the id changed, to a non-empty string of at most
    ``MAX_ID_LEN`` UTF-8 bytes other than the resting order's own id ("o-1" is a duplicate).
    Every other mutation must be refused.
    """
    where = draw(st.sampled_from(["raw", "whole", "version", "commands", "command", "field"]))
    if where == "raw":
        return draw(st.binary(max_size=200)), None
    if where == "whole":
        return msgpack.packb(draw(values)), None
    if where == "version":
        return msgpack.packb([draw(values), [list(VALID)]]), None
    if where == "commands":
        return msgpack.packb([VERSION, draw(values)]), None
    if where == "command":
        return msgpack.packb([VERSION, [draw(values), list(VALID)]]), None
    cmd = list(VALID)
    index = draw(st.integers(0, len(cmd) - 1))
    cmd[index] = draw(values)
    cut = draw(st.booleans())
    if cut:
        cmd = cmd[: draw(st.integers(0, len(cmd)))]
    return msgpack.packb([VERSION, [cmd]]), _valid_new_id(cmd)


def _valid_new_id(cmd: list) -> str | None:
    """The id when ``cmd`` (VALID with one field replaced) is a valid new order, else None."""
    if len(cmd) != len(VALID):
        return None
    pairs = zip(cmd, VALID, strict=True)
    if any(a != b or type(a) is not type(b) for i, (a, b) in enumerate(pairs) if i != 2):
        return None
    oid = cmd[2]
    if type(oid) is not str or oid == VALID[2]:
        return None
    size = len(oid.encode("utf-8", "surrogatepass"))
    return oid if 0 < size <= MAX_ID_LEN else None


def _books(core: ShardCore) -> dict:
    return core.engine.snapshot()["books"]


class RecordingJournal:
    """Stands in for the journal's file (the bytes are what matters here, not the disk)."""

    def __init__(self) -> None:
        self.cmds: list = []
        self.pending = 0

    def add(self, seq: int, cmd: tuple) -> None:
        self.cmds.append(cmd)

    def commit(self) -> None:
        pass

    def events(self, first: int, last: int, budget: int | None = None):
        return None


def _core() -> tuple[ShardCore, RecordingJournal]:
    journal = RecordingJournal()
    core = ShardCore(0, 1, DEFAULT_MARKETS, journal=journal, ring_size=64)  # type: ignore[arg-type]
    out: list = []
    core.handle(encode_request([VALID]), out, {})  # a resting order garbage must not touch
    core.ring.extend(out)
    return core, journal


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=payloads())
@example(case=(msgpack.packb([VERSION, [[*VALID[:2], "", *VALID[3:]]]]), None))
@example(case=(msgpack.packb([VERSION, [[*VALID[:2], "o-2", *VALID[3:]]]]), "o-2"))
@example(case=(msgpack.packb([VERSION, [[*VALID[:2], "\x00", *VALID[3:]]]]), "\x00"))
def test_shard_core_survives_any_payload_and_changes_no_book(case: tuple[bytes, str | None]):
    payload, new_id = case
    core, journal = _core()
    before = _books(core)
    journal.cmds.clear()
    out: list = []
    reply = core.handle(payload, out, {})
    assert isinstance(reply, bytes) and len(reply) <= MAX_EVENTS_REPLY_BYTES + 4096
    error, results = decode_reply(reply)
    assert error is not None or isinstance(results, tuple)
    if new_id is None:
        # garbage: only rejects came out and no book changed (a fuzzed command may by chance be
        # the valid order itself: then it is a duplicate id, rejected too)
        assert all(ev[0] == EV_REJECTED for ev in out), out
        assert _books(core) == before
    else:
        # the mutation made a valid order with a new id: it is accepted and rests beside o-1
        assert [(ev[0], ev[3]) for ev in out] == [(EV_ACCEPTED, new_id)], out
        assert _books(core) != before
    core.engine.check_integrity()
    for ev in out:  # bounded events (they are published and written to Redis)
        assert len(msgpack.packb(ev)) <= 400, ev
    for cmd in journal.cmds:  # bounded journal records
        assert len(msgpack.packb(cmd)) <= 400, cmd


@settings(max_examples=300, deadline=None)
@given(cmd=values)
def test_edge_command_bounds_any_value(cmd):
    value = tuple(cmd) if isinstance(cmd, list) else cmd
    safe = edge_command(value)
    assert type(safe) is tuple and safe
    if safe is not value:
        op, symbol, oid, reason = safe[:4]  # (a code may follow)
        assert op == 4 and len(symbol) <= MAX_SYMBOL_LEN and len(oid) <= MAX_ID_LEN
        assert len(reason) <= 200


@given(v=st.one_of(values, st.integers(min_value=10**5000, max_value=10**5001)))
def test_quote_is_bounded_and_never_raises(v):
    q = quote(v)
    assert isinstance(q, str) and len(q) <= 64


@settings(max_examples=200, deadline=None)
@given(frames=st.lists(st.binary(max_size=40), max_size=6), payload=values)
def test_router_decisions_never_raise(frames, payload):
    r = Router(2, RouterConfig(2, "", ""))
    frames = [b"client", *frames]
    if len(frames) == 4:
        frames[3] = msgpack.packb(payload)
    shard, reply = r.from_client(frames, 0.0)
    assert (shard in (0, 1) and reply is None) or (shard == -1 and reply[0] == b"client")
    r.from_shard([b"shard-0", *frames[1:]], 0.0)
    r.from_shard([b"shard-0", b"", b"HELLO", msgpack.packb(payload)], 0.0)
    r.from_shard([b"shard-0", b"", BATCH, msgpack.packb(payload)], 0.0)
    for data in (msgpack.packb(payload), *frames):  # any batch body, either width
        for width in (BATCH_REQUEST_WIDTH, BATCH_REPLY_WIDTH):
            items = decode_batch(data, width)
            assert items is None or (
                len(items) % width == 0 and all(type(x) is bytes for x in items)
            )


@settings(max_examples=300, deadline=None)
@given(payload=st.one_of(st.binary(max_size=100), values.map(msgpack.packb)))
def test_reply_decoder_never_raises(payload):
    error, results = decode_reply(payload)
    if error is None:
        assert unpackb(payload)[0] == VERSION and isinstance(results, tuple)
    else:
        assert isinstance(error, str) and results is None


def test_nan_and_float_fields_are_rejected_with_a_reason():
    core, _ = _core()
    cmd = list(VALID)
    cmd[2] = "o-2"
    cmd[6] = math.nan
    out: list = []
    core.handle(msgpack.packb([VERSION, [cmd]]), out, {})
    assert out[0][0] == EV_REJECTED and "price" in out[0][4]


def test_the_ten_byte_payload_that_killed_a_shard():
    core, _ = _core()
    out: list = []
    reply = core.handle(msgpack.packb([1, [[{}]]]), out, {})
    error, results = decode_reply(reply)
    assert error is None and results[0][0][0] == EV_REJECTED
    assert "unknown op" in results[0][0][4]

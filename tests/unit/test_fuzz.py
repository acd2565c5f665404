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
from shardex.engine.codes import (
    EV_REJECTED,
    EVENT_NAMES,
    OP_AMEND,
    OP_CANCEL,
    OP_NEW,
    OP_REJECT,
    REJECT_NAMES,
)
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
from tests.support.depth import examples

VALID = (OP_NEW, "BTC-USD", "o-1", "alice", 0, 0, 3_000_000, 10, 0, False, 0)


def _repeat(text: str, length: int) -> str:
    """``text`` repeated to at least ``length`` characters."""
    return text * -(-length // len(text))


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=80),
    # very long strings (past every length cap, in characters and in UTF-8 bytes): a short
    # random text repeated to 1000-3000 characters. Drawing 1000-3000 random characters each
    # time was a third of this file's CPU, and a cap counts the length, not the variety.
    st.builds(_repeat, st.text(min_size=1, max_size=10), st.integers(1000, 3000)),
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


def _resting_order_command(v: object) -> bool:
    """True when ``v`` holds, at any depth, a list that starts like a cancel or an amend of the
    resting order (its op, symbol, id and account): such a list can be a valid command, so the
    garbage positions below leave it out (the ``field`` position covers it, with its outcome)."""
    if isinstance(v, dict):
        return any(_resting_order_command(x) for x in v.values())
    if not isinstance(v, list):
        return False
    if len(v) >= 4 and any(_same(v[0], op) for op in (OP_CANCEL, OP_AMEND)):
        if all(_same(a, b) for a, b in zip(v[1:4], VALID[1:4], strict=True)):
            return True
    return any(_resting_order_command(x) for x in v)


def _same(a: object, b: object) -> bool:
    """Equal and of the same type (msgpack keeps ``True`` and ``1``, ``2.0`` and ``2`` apart,
    and so does the decoder)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]
    return a == b


garbage = values.filter(lambda v: not _resting_order_command(v))


@st.composite
def payloads(draw) -> tuple[bytes, tuple[str, str] | None]:
    """A request payload with garbage in one chosen position (or everywhere), and what the
    garbage means when it happens to spell a valid command (``_meaning``), else None.

    Garbage lists hold at most 6 items, so outside the ``field`` position no garbage is a new
    order (11 fields); ``garbage`` leaves out every cancel or amend of the resting order, and a
    cancel or amend of any other id names an order that is not live (a ``not_live`` reject).
    """
    where = draw(st.sampled_from(["raw", "whole", "version", "commands", "command", "field"]))
    if where == "raw":
        return draw(st.binary(max_size=200)), None
    if where == "whole":
        return msgpack.packb(draw(garbage)), None
    if where == "version":
        return msgpack.packb([draw(garbage), [list(VALID)]]), None
    if where == "commands":
        return msgpack.packb([VERSION, draw(garbage)]), None
    if where == "command":
        return msgpack.packb([VERSION, [draw(garbage), list(VALID)]]), None
    cmd = list(VALID)
    index = draw(st.integers(0, len(cmd) - 1))
    cmd[index] = draw(values)
    cut = draw(st.booleans())
    if cut:
        cmd = cmd[: draw(st.integers(0, len(cmd)))]
    return msgpack.packb([VERSION, [cmd]]), _meaning(cmd)


def _meaning(cmd: list) -> tuple[str, str] | None:
    """What ``cmd`` (``VALID`` with one field replaced, maybe cut short) does when it is a valid
    command, as ``(event kind, order id)``; None when it must be refused.

    The spec, written here from the command layouts (``engine.codes``) independently of the
    decoder and the engine. A one-field mutation of the resting order ``o-1`` is valid in
    exactly two ways:

    * only the id changed, to a non-empty string of at most ``MAX_ID_LEN`` UTF-8 bytes other
      than ``o-1`` (a duplicate): a valid new order, ``accepted``;
    * the op changed to ``OP_CANCEL`` and the command was cut to a cancel's four fields
      ``(op, symbol, id, account)``: its owner cancels ``o-1``, ``cancelled`` (this one failed
      the property when it said every mutation is refused).

    Not valid, for the record: the op changed to ``OP_AMEND`` cut to six fields amends to qty 0
    and price 0 (``out_of_range``); the op changed to ``OP_REJECT`` is an internal op a client
    may not send; every other field changed keeps the id ``o-1``, a duplicate.
    """
    if len(cmd) == 4 and _same(cmd, [OP_CANCEL, *VALID[1:4]]):
        return "cancelled", VALID[2]
    if len(cmd) != len(VALID):
        return None
    if not all(_same(a, b) for i, (a, b) in enumerate(zip(cmd, VALID, strict=True)) if i != 2):
        return None
    oid = cmd[2]
    if type(oid) is not str or oid == VALID[2]:
        return None
    size = len(oid.encode("utf-8", "surrogatepass"))
    return ("accepted", oid) if 0 < size <= MAX_ID_LEN else None


def _books(core: ShardCore) -> dict:
    return core.engine.snapshot()["books"]


def _ids(book: dict) -> list[str]:
    """The ids of the orders resting in one book of an engine snapshot."""
    return [order[0] for side in ("bids", "asks") for order in book[side]]


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


@settings(max_examples=examples(250), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=payloads())
@example(case=(msgpack.packb([VERSION, [[*VALID[:2], "", *VALID[3:]]]]), None))
@example(case=(msgpack.packb([VERSION, [[*VALID[:2], "o-2", *VALID[3:]]]]), ("accepted", "o-2")))
@example(case=(msgpack.packb([VERSION, [[*VALID[:2], "\x00", *VALID[3:]]]]), ("accepted", "\x00")))
# the op mutated to a cancel and the command cut to a cancel's fields: the owner's cancel of the
# resting order, a valid command (the property once said every mutation is refused)
@example(case=(msgpack.packb([VERSION, [[OP_CANCEL, *VALID[1:4]]]]), ("cancelled", "o-1")))
# the same cut with the op mutated to an amend: qty 0, price 0, refused (out_of_range)
@example(case=(msgpack.packb([VERSION, [[OP_AMEND, *VALID[1:6]]]]), None))
@example(case=(msgpack.packb([VERSION, [[OP_REJECT, *VALID[1:4]]]]), None))  # internal op
def test_shard_core_survives_any_payload_and_changes_no_book(
    case: tuple[bytes, tuple[str, str] | None],
):
    """What is checked, for every payload: nothing raises; the reply is bounded and decodes;
    the events and the journal records are bounded; the engine's integrity holds. Then either
    the payload is refused (``meaning`` None): every event is a ``rejected`` one carrying a
    known reject code (the stable half; no event at all when the whole request is refused, an
    error reply instead, and then nothing was journaled), and no book changed; or it spells a
    valid command (``_meaning``): exactly that command's one event came out, for that order,
    and the book changed accordingly."""
    payload, meaning = case
    core, journal = _core()
    before = _books(core)
    journal.cmds.clear()
    out: list = []
    reply = core.handle(payload, out, {})
    assert isinstance(reply, bytes) and len(reply) <= MAX_EVENTS_REPLY_BYTES + 4096
    error, results = decode_reply(reply)
    assert error is not None or isinstance(results, tuple)
    if meaning is None:
        # garbage: only rejects with a stable code came out and no book changed (a fuzzed
        # command may by chance be the valid order itself: then it is a duplicate id, refused)
        assert all(ev[0] == EV_REJECTED and 0 <= ev[5] < len(REJECT_NAMES) for ev in out), out
        if error is not None:  # the whole request was refused: nothing of it ran
            assert out == [] and journal.cmds == [], (error, out)
        assert _books(core) == before
    else:
        kind, oid = meaning
        assert [(EVENT_NAMES[ev[0]], ev[3]) for ev in out] == [(kind, oid)], out
        after = _books(core)
        assert after != before
        resting = {ev_id for book in after.values() for ev_id in _ids(book)}
        assert (oid in resting) == (kind == "accepted") and ("o-1" in resting) == (oid != "o-1")
    core.engine.check_integrity()
    for ev in out:  # bounded events (they are published and written to Redis)
        assert len(msgpack.packb(ev)) <= 400, ev
    for cmd in journal.cmds:  # bounded journal records
        assert len(msgpack.packb(cmd)) <= 400, cmd


@settings(max_examples=examples(150), deadline=None)
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


@settings(max_examples=examples(100), deadline=None)
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


@settings(max_examples=examples(150), deadline=None)
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

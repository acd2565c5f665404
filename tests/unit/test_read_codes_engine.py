"""An engine shard's refused reads carry a code; the SDK, the CLI and the bridge decide on it.

Book, book-orders (audit), order (fate) and events (repair) reads that an engine shard refuses
answer ``{"error": (code, text, data)}`` (``shardex.wire.errors.read_error``): what a client
makes of them (the map's code, an order's fate, a direct client's topology refresh, loadgen's
reason for an unknown fate, the bridge's "denied" or "lost") does not change when every text
is reworded, and ``shardex book`` prints the text. (The account shard's version:
``test_read_codes.py``.)
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import pytest
from click.testing import CliRunner

from shardex.auth import KeyInfo
from shardex.cli import market as cli_market
from shardex.client import UNKNOWN, ClientCore
from shardex.config import load_markets
from shardex.engine.codes import OP_NEW
from shardex.node.bridge.replies import denied, parse_events_reply
from shardex.node.shard_core import ShardCore
from shardex.tools.fates import WHY_OTHER, why_unknown
from shardex.wire.errors import ErrorText, not_leader_error
from shardex.wire.protocol import (
    OP_BOOK,
    OP_EVENTS,
    OP_ORDER,
    decode_reply,
    encode_request,
    shard_for,
)
from tests.support import inproc

MARKETS = load_markets(None)
NONSENSE = "lorem ipsum"
TRADER = KeyInfo("t" * 40, "t-alice", "trader", frozenset({"alice"}))
READER = KeyInfo("r" * 40, "r-audit", "reader", frozenset())
BRIDGE = KeyInfo("b" * 40, "b-bridge", "bridge", frozenset())


class _OneKey:
    """A key registry holding the one key every request of a test comes with."""

    def __init__(self, key: KeyInfo) -> None:
        self.key = key

    def lookup(self, user: str | None) -> KeyInfo | None:
        return self.key


def _symbols() -> tuple[str, str]:
    """(a symbol shard 0 of 2 holds, one shard 1 holds)."""
    ours = next(s for s in sorted(MARKETS) if shard_for(s, 2) == 0)
    theirs = next(s for s in sorted(MARKETS) if shard_for(s, 2) == 1)
    return ours, theirs


def _read(key: KeyInfo, cmd: tuple) -> tuple[Any, Any]:
    """(batch error, results) of one read by ``key`` at shard 0 of 2, as a client decodes
    them (a shard that has run writes its ring no longer holds: events 1..2 are gone)."""
    core = ShardCore(0, 2, MARKETS, registry=_OneKey(key))  # type: ignore[arg-type]
    ours, _ = _symbols()
    core.engine.apply_many([(OP_NEW, ours, f"o{i}", "alice", 0, 0, 1, 1) for i in range(3)])
    return decode_reply(core.handle(encode_request([cmd]), [], {}, user=key.key))


# each refused read: (what, key, command, the code the client must see)
def _refusals() -> list[tuple[str, KeyInfo, tuple, str]]:
    ours, theirs = _symbols()
    return [
        ("book of an unknown symbol", TRADER, (OP_BOOK, "NOPE-XYZ", 10), "unknown_symbol"),
        ("book of another shard's symbol", TRADER, (OP_BOOK, theirs, 10), "wrong_shard"),
        ("book with a bad depth", TRADER, (OP_BOOK, ours, 0), "malformed"),
        ("book of a symbol not a string", TRADER, (OP_BOOK, 7, 10), "malformed"),
        ("book orders by a trader", TRADER, (OP_BOOK, ours, 1, 0), "not_allowed"),
        ("book orders at a bad offset", READER, (OP_BOOK, ours, 1, -1), "malformed"),
        ("order of another account", TRADER, (OP_ORDER, ours, "bob", "o1"), "not_allowed"),
        ("order of an unknown symbol", TRADER, (OP_ORDER, "NOPE-XYZ", "alice", "o1"),
         "unknown_symbol"),  # fmt: skip
        ("order of another shard's symbol", TRADER, (OP_ORDER, theirs, "alice", "o1"),
         "wrong_shard"),  # fmt: skip
        ("order with a bad field", TRADER, (OP_ORDER, ours, "alice", 7), "malformed"),
        ("events by a trader", TRADER, (OP_EVENTS, 1, 2), "not_allowed"),
        ("events of no range", BRIDGE, (OP_EVENTS, 2, 1), "malformed"),
        ("events gone", BRIDGE, (OP_EVENTS, 1, 2), "events_gone"),
    ]


def _sees(cmd: tuple, error: Any, results: Any) -> tuple[Any, ...]:
    """What every consumer makes of one refused read: the SDK's map code; for an order read,
    its fate, the fate's error code and whether a direct client refreshes its topology; for
    an events read, the bridge's "denied" (an ALERT, asked again) or not (counted lost)."""
    core = ClientCore("tcp://127.0.0.1:1", key=False)
    raw = core.read_result(error, results, "read")
    seen: tuple[Any, ...] = (raw.get("code"),)
    if cmd[0] == OP_ORDER:
        fate, status = core.fate_of((OP_NEW, "BTC-USD", "o1", "alice"), error, results[0])
        why = status.get("error") if status else None
        stale = core.topology_stale([(error, [])], {0: (fate, status)}, [0])
        seen += (fate, getattr(why, "name", None), stale, why_unknown(status))
    if cmd[0] == OP_EVENTS:
        evs, gone, _seq, _bad = parse_events_reply(error, results, 1, 2, MARKETS)
        seen += (evs, getattr(gone, "name", None), denied(gone))
    return seen


def _book_cli(monkeypatch: pytest.MonkeyPatch, results: Any) -> tuple[int, str]:
    """``shardex book`` on a client whose book read got ``results``: (exit code, output)."""

    class _Client:
        def book(self, symbol: str, depth: int) -> dict[str, Any]:
            core = ClientCore("tcp://127.0.0.1:1", key=False)
            return core.decimal_book(core.read_result(None, results, f"book of {symbol}"))

    @contextmanager
    def client(*_args: Any) -> Any:
        yield _Client()

    monkeypatch.setattr(cli_market, "_client", client)
    out = CliRunner().invoke(cli_market.book, ["BTC-USD", "--endpoint", "tcp://127.0.0.1:1"])
    return out.exit_code, out.output


def test_refused_engine_reads_carry_their_code() -> None:
    for what, key, cmd, name in _refusals():
        error, results = _read(key, cmd)
        assert error is None, (what, error)
        seen = _sees(cmd, error, results)
        assert seen[0] == name, what
        if cmd[0] == OP_ORDER:  # open (no guess), its code kept; a refresh only when the
            # sender's placement map is stale (wrong_shard)
            assert seen[1:] == (UNKNOWN, name, name == "wrong_shard", WHY_OTHER), what
        if cmd[0] == OP_EVENTS:  # denied: asked again; anything else: lost
            assert seen[1:] == (None, name, name == "not_allowed"), what


def test_wrong_shard_names_the_owner_in_data() -> None:
    ours, theirs = _symbols()
    for cmd in ((OP_BOOK, theirs, 10), (OP_ORDER, theirs, "alice", "o1")):
        raw = ClientCore.read_result(*_read(TRADER, cmd), "read")
        assert raw["code"] == "wrong_shard" and raw["error"].data == {"shard": 1, "version": 0}


def test_rewording_every_engine_read_refusal_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plain = {what: _sees(cmd, *_read(key, cmd)) for what, key, cmd, _ in _refusals()}
    with monkeypatch.context() as m:
        new = ErrorText.__new__
        m.setattr(ErrorText, "__new__", staticmethod(
            lambda cls, code, text, data=None: new(cls, code, NONSENSE, data)))  # fmt: skip
        reworded = {}
        for what, key, cmd, _ in _refusals():
            error, results = _read(key, cmd)
            assert NONSENSE in str(results[0]["error"]), what  # the text did change
            reworded[what] = _sees(cmd, error, results)
    assert reworded == plain


def test_an_order_read_after_a_leader_change_still_refreshes_the_topology() -> None:
    """A fate question a standby refused (``not_leader``, a batch error) still sends a direct
    client to the router, as does ``wrong_shard`` (its placement map is stale), while a coded
    read refusal no refresh can change does not."""
    core = ClientCore("tcp://127.0.0.1:1", key=False)
    cmd = (OP_NEW, "BTC-USD", "o1", "alice")
    refused = not_leader_error(3, "a standby")
    fate = core.fate_of(cmd, refused, None)
    assert fate[0] == UNKNOWN and core.topology_stale([(None, [])], {0: fate}, [0])
    _, theirs = _symbols()
    error, results = _read(TRADER, (OP_ORDER, theirs, "alice", "o1"))
    fate = core.fate_of(cmd, error, results[0])
    assert fate[0] == UNKNOWN and core.topology_stale([(None, [])], {0: fate}, [0])
    error, results = _read(TRADER, (OP_ORDER, "NOPE-XYZ", "alice", "o1"))
    fate = core.fate_of(cmd, error, results[0])
    assert fate[0] == UNKNOWN and not core.topology_stale([(None, [])], {0: fate}, [0])


def test_shardex_book_prints_the_refusal_text(monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = _symbols()[1]
    for cmd, text in (((OP_BOOK, "NOPE-XYZ", 10), "unknown symbol NOPE-XYZ"),
                      ((OP_BOOK, theirs, 10), f"symbol {theirs} is on shard 1")):  # fmt: skip
        code, output = _book_cli(monkeypatch, _read(TRADER, cmd)[1])
        assert (code, output.strip()) == (1, f"Error: {text}")  # the text, not the wire tuple
    with monkeypatch.context() as m:
        new = ErrorText.__new__
        m.setattr(ErrorText, "__new__", staticmethod(
            lambda cls, code, text, data=None: new(cls, code, NONSENSE, data)))  # fmt: skip
        results = _read(TRADER, (OP_BOOK, "NOPE-XYZ", 10))[1]
    code, output = _book_cli(monkeypatch, results)
    assert code == 1 and output.strip() == f"Error: {NONSENSE}"


def test_a_cluster_in_one_process_answers_a_refused_book_read_by_code() -> None:
    """The wiring end to end (client → router → engine shard → client, every hop encoded):
    a book of a symbol no market has comes back with its code."""

    async def body(cluster: Any) -> dict[str, Any]:
        async with cluster.client() as cl:
            return await cl.book("NOPE-XYZ", 5)

    book = inproc.run(inproc.plan(shards=2), body)
    assert book["code"] == "unknown_symbol" and book["error"] == "unknown symbol NOPE-XYZ"

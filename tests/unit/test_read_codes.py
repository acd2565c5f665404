"""An account shard's refused reads carry a code; the SDK and the bridge decide on it.

Balance, open orders, order (held) and audit reads that an account shard refuses answer
``{"error": (code, text, data)}`` (``shardex.wire.errors.read_error``), and what a client makes
of them (the exception's code, the fate it gives) does not change when every text is reworded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from shardex.accounts.machines import AccountMachineFactory
from shardex.auth import KeyInfo
from shardex.client import UNKNOWN, ClientCore, ShardexError, audit_report
from shardex.client.errors import _failed
from shardex.config import load_markets
from shardex.engine.codes import OP_NEW
from shardex.node.account_service import AccountHandler
from shardex.node.bridge.replies import denied, parse_events_reply
from shardex.node.nulljournal import NullJournal
from shardex.wire import codes
from shardex.wire import errors as wire_errors
from shardex.wire.errors import ErrorText
from shardex.wire.protocol import (
    OP_AUDIT,
    OP_BALANCE,
    OP_ORDER,
    decode_reply,
    encode_reply,
    encode_request,
)

MARKETS = load_markets(None)
NONSENSE = "lorem ipsum"
OWN = frozenset({"alice", *(f"alice{i}" for i in range(100))})  # the trader's accounts
TRADER = KeyInfo("k" * 40, "t-alice", "trader", OWN)


class _OneKey:
    """A key registry holding the one key every request in these tests comes with."""

    def __init__(self, key: KeyInfo) -> None:
        self.key = key

    def lookup(self, user: str | None) -> KeyInfo | None:
        return self.key


def _handler(shards: int = 1) -> AccountHandler:
    machine = AccountMachineFactory(0, shards, lambda _s: 0).new(MARKETS)
    return AccountHandler(machine, NullJournal(), _OneKey(TRADER))  # type: ignore[arg-type]


def _other_shards_account(h: AccountHandler) -> str:
    return next(a for a in sorted(OWN) if not h.core.owns(a))


def _read(h: AccountHandler, cmd: tuple) -> tuple[Any, Any]:
    """(batch error, results) of one read, as a client decodes them."""
    return decode_reply(h.handle(encode_request([cmd]), [], TRADER.key))


# each refused read: (what, command, the code the client must see)
def _refusals(h: AccountHandler) -> list[tuple[str, tuple, str]]:
    other = _other_shards_account(h)
    return [
        ("balance of another account", (OP_BALANCE, "bob"), "not_allowed"),
        ("balance without an account", (OP_BALANCE, ""), "malformed"),
        ("orders of another account", (OP_ORDER, "bob"), "not_allowed"),
        ("orders of an account of another shard", (OP_ORDER, other), "wrong_shard"),
        ("order of another account", (OP_ORDER, "BTC-USD", "bob", "o1"), "not_allowed"),
        ("order with a bad field", (OP_ORDER, "BTC-USD", "alice", 7), "malformed"),
        ("audit by a trader", (OP_AUDIT,), "not_allowed"),
        ("audit page by a trader", (OP_AUDIT, 0), "not_allowed"),
    ]


def _client_sees(error: Any, results: Any) -> tuple[Any, ...]:
    """What the SDK makes of one read's reply: the exception's code and type from the read
    paths (balance/status reads, open orders), the map's code, and an order's fate."""
    core = ClientCore("tcp://127.0.0.1:1", key=False)
    raw = core.read_result(error, results, "read")
    with pytest.raises(ShardexError) as orders:
        core.open_orders_result(raw, "alice")
    fate, status = core.held_fate((OP_NEW, "BTC-USD", "o1", "alice"), None, results[0])
    why = status.get("error") if status else None
    return raw.get("code"), orders.value.code, fate, getattr(why, "name", None)


@pytest.fixture
def scramble(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Rewrite the text of every error made from now on (codes and data untouched)."""
    new = ErrorText.__new__

    def nonsense(cls: type, code: int, text: str, data: Any = None) -> ErrorText:
        return new(cls, code, NONSENSE, data)  # type: ignore[arg-type]

    monkeypatch.setattr(ErrorText, "__new__", staticmethod(nonsense))
    yield


def test_refused_account_reads_carry_their_code() -> None:
    h = _handler(shards=2)
    for what, cmd, name in _refusals(h):
        error, results = _read(h, cmd)
        assert error is None, (what, error)
        assert _client_sees(error, results) == (name, name, UNKNOWN, name), what


def test_rewording_every_read_refusal_changes_nothing_for_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = _handler(shards=2)
    plain = {what: _client_sees(*_read(h, cmd)) for what, cmd, _ in _refusals(h)}
    with monkeypatch.context() as m:
        new = ErrorText.__new__
        m.setattr(ErrorText, "__new__", staticmethod(
            lambda cls, code, text, data=None: new(cls, code, NONSENSE, data)))  # fmt: skip
        reworded = {}
        for what, cmd, _ in _refusals(h):
            error, results = _read(h, cmd)
            assert NONSENSE in str(results[0]["error"]), what  # the text did change
            reworded[what] = _client_sees(error, results)
    assert reworded == plain


def test_a_balance_read_refusal_keeps_its_code_in_the_exception() -> None:
    """The ``balance`` call raises the client's ``_failed`` of the read's refusal."""
    h = _handler()
    raw = ClientCore.read_result(*_read(h, (OP_BALANCE, "bob")), "balance of bob")
    exc = _failed("balance", raw["error"])
    assert exc.code == "not_allowed" and str(exc).startswith("balance: account bob")


def test_an_audit_refusal_reads_as_text_with_its_code() -> None:
    h = _handler()
    raw = ClientCore.read_result(*_read(h, (OP_AUDIT,)), "account shard 0")
    assert raw["code"] == "not_allowed" and raw["error"] == "audit: not allowed for this key"
    lines, ok = audit_report([{"shard": 0, **raw}])
    assert not ok and lines[0] == "account shard 0: ERROR audit: not allowed for this key"


def test_a_read_answered_with_bare_text_is_still_read() -> None:
    """A peer that does not code its reads (an engine shard's read maps) still reads: its
    text, no code (nothing decides on it)."""
    results = decode_reply(encode_reply([{"error": "unknown symbol X"}]))[1]
    raw = ClientCore.read_result(None, results, "book")
    assert raw == {"error": "unknown symbol X"}
    assert wire_errors.result_error(raw) == "unknown symbol X"
    garbage = wire_errors.result_error({"error": [1, 2]})
    assert type(garbage) is ErrorText and garbage.name == "malformed_reply"
    assert wire_errors.result_error({"seq": 3}) is None


def test_the_bridge_tells_a_denied_repair_by_its_code(scramble: None) -> None:
    refusal = wire_errors.read_error(codes.NOT_ALLOWED, "events: not allowed for this key")
    results = decode_reply(encode_reply([{**refusal, "seq": 4}]))[1]
    evs, gone, seq, bad = parse_events_reply(None, results, 1, 4, MARKETS)
    assert evs is None and seq == 4 and gone == NONSENSE and denied(gone)
    other = wire_errors.read_error(codes.MALFORMED, "events: expected (op, first seq, last seq)")
    results = decode_reply(encode_reply([other]))[1]
    assert not denied(parse_events_reply(None, results, 1, 4, MARKETS)[1])

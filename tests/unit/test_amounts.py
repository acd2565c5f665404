"""Decimal strings at the edge: one parser (``shardex.amounts``) for prices, quantities,
amounts and budgets, taking plain ASCII decimals only; balances at the asset's precision."""

from __future__ import annotations

import tempfile
from decimal import Decimal as D

import msgpack
import pytest
from click.testing import CliRunner

from shardex.accounts.assets import AssetTable
from shardex.accounts.machines import AccountMachineFactory
from shardex.amounts import at_precision, parse_decimal, plain
from shardex.cli import main
from shardex.client import _money
from shardex.config import load_markets
from shardex.engine.codes import OP_NEW, OP_REJECT
from shardex.journal import Journal
from shardex.node.accounts import AccountHandler
from shardex.wire.protocol import OP_BALANCE, OP_DEPOSIT, VERSION, command_from_json, decode_reply

MARKETS = load_markets(None)
# each of these was accepted somewhere as a number (12.00, 100, 0.5, ...)
NOT_PLAIN = ["+5", "1e2", "1E2", ".5", "5.", "١٢", "１２", "1.2.3", "--5", "5-", " 5", "5 ",
             "1_000", "NaN", "Infinity", "0x10", "", "1" * 65, "12\n"]  # fmt: skip


@pytest.mark.parametrize("text", NOT_PLAIN)
def test_only_plain_ascii_decimals_parse(text: str) -> None:
    assert parse_decimal(text) is None
    assert parse_decimal(text, signed=True) is None


def test_plain_decimals_parse_exactly() -> None:
    assert parse_decimal("12") == D(12) and parse_decimal("12.50") == D("12.50")
    assert parse_decimal("0.00000001") == D("1e-8")
    assert parse_decimal("-5") is None and parse_decimal("-5", signed=True) == D(-5)
    assert parse_decimal(12) is None and parse_decimal(b"12") is None


@pytest.mark.parametrize("text", NOT_PLAIN)
def test_orders_refuse_non_plain_qty_and_price(text: str) -> None:
    order = {"op": "new", "symbol": "BTC-USD", "id": "x", "account": "a", "side": "buy",
             "type": "limit", "price": "100", "qty": text}  # fmt: skip
    assert command_from_json(order, MARKETS)[0] == OP_REJECT
    assert command_from_json({**order, "qty": "1", "price": text}, MARKETS)[0] == OP_REJECT
    assert command_from_json({**order, "qty": "1"}, MARKETS)[0] == OP_NEW


def _handler(path: str) -> AccountHandler:
    factory = AccountMachineFactory(0, 1, lambda _s: 0)
    journal = Journal(path, MARKETS, fsync="none", machine=factory)
    return AccountHandler(journal.recover().engine, journal)  # type: ignore[arg-type]


def _ask(h: AccountHandler, cmds: list) -> tuple:
    error, results = decode_reply(h.handle(msgpack.packb([VERSION, cmds]), []))
    assert error is None, error
    return results


def test_account_shard_refuses_non_plain_amounts_and_budgets() -> None:
    with tempfile.TemporaryDirectory() as path:
        h = _handler(path)
        for k, text in enumerate(NOT_PLAIN):
            (res,) = _ask(h, [(OP_DEPOSIT, "alice", "USD", text, f"r{k}")])
            assert "rejected" in res, (text, res)
            budget = (OP_NEW, "BTC-USD", f"b{k}", "alice", 0, 1, 0, 10, 1, False, 0, text)
            (res,) = _ask(h, [budget])
            assert len(res) == 1 and res[0][4], (text, res)
        assert h.core.balance("alice", "USD") == (0, 0)  # "١٢" was 12.00 USD
        (ok,) = _ask(h, [(OP_DEPOSIT, "alice", "USD", "30.0075", "ok")])
        assert ok["available"] == "30.007500"  # at USD's precision (unit 0.000001)
        (bal,) = _ask(h, [(OP_BALANCE, "alice")])
        assert bal["balances"] == {"USD": ("30.007500", "0.000000")}


def test_client_sends_decimals_without_exponent() -> None:
    assert _money(D("1E+2"), "qty") == "100" and _money(D("1E-7"), "qty") == "0.0000001"
    assert plain(D("0E-8")) == "0.00000000"


def test_asset_precision() -> None:
    table = AssetTable(MARKETS)
    assert table.fixed("USD", 10_000_000) == "10.000000"
    assert table.fixed("BTC", 0) == "0.00000000"
    assert at_precision(D("1.5"), D("0.01")) == "1.50"


def test_cli_deposit_negative_amount_is_a_clear_error() -> None:
    res = CliRunner().invoke(main, ["deposit", "alice", "USD", "-5"])
    assert res.exit_code == 2 and "No such option" not in res.output
    assert "amount -5 is negative" in res.output and "shardex withdraw" in res.output
    for text in ("+5", "1e2", ".5", "١٢"):
        res = CliRunner().invoke(main, ["withdraw", "alice", "USD", text])
        assert res.exit_code == 2 and "is not a positive amount" in res.output, (text, res.output)
    # zero is well formed: say it is zero, not that it is not ASCII digits
    for text in ("0", "0.00"):
        res = CliRunner().invoke(main, ["withdraw", "alice", "USD", text])
        assert res.exit_code == 2 and f"amount '{text}' is zero" in res.output, res.output
        assert "ASCII" not in res.output, res.output

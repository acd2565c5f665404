"""``shardex.wire.layouts`` names every tuple position once; this keeps the names honest.

Three checks: each name is the position its layout's specification gives it (the prose in
``engine/codes.py`` and ``accounts/codes.py``, parsed here); each name reads the right value
from tuples the real encoders make (the JSON schema, the engine, the account machine); and the
modules that were moved to the names hold no bare layout index (``cmd[3]``, ``ev[5]``) again.
"""

from __future__ import annotations

import ast
import re
from decimal import Decimal
from pathlib import Path

import pytest

from shardex.accounts import codes as account_codes
from shardex.accounts.codes import A_DEPOSIT, A_NEW, AE_BALANCE, AE_FORWARD
from shardex.accounts.machines import AccountMachineFactory
from shardex.accounts.orders import held_rows
from shardex.config import load_markets
from shardex.engine import Engine
from shardex.engine import codes as engine_codes
from shardex.engine.codes import (
    EV_ACCEPTED,
    EV_AMENDED,
    EV_CANCELLED,
    EV_REJECTED,
    EV_TRADE,
    OP_CANCEL,
    OP_NEW,
    REJ_UNKNOWN_SYMBOL,
)
from shardex.wire import layouts as L
from shardex.wire.envelope import unpackb
from shardex.wire.pub import decode_envelope, encode_events
from shardex.wire.schema import command_from_json

ROOT = Path(__file__).resolve().parents[2]
MARKETS = load_markets(None)
SYMBOL = "BTC-USD"

# (name in ``layouts``, the tuple it is a position of, the field's name in that tuple's spec)
SPEC = [
    ("CMD_OP", "OP_NEW", "OP_NEW"),
    ("CMD_SYMBOL", "OP_NEW", "symbol"),
    ("CMD_ID", "OP_CANCEL", "id"),
    ("CMD_ACCOUNT", "OP_AMEND", "account"),
    ("NEW_SIDE", "OP_NEW", "side"),
    ("NEW_TYPE", "OP_NEW", "type"),
    ("NEW_PRICE", "OP_NEW", "price|None"),
    ("NEW_QTY", "OP_NEW", "qty"),
    ("NEW_TIF", "OP_NEW", "tif"),
    ("NEW_POST_ONLY", "OP_NEW", "post_only"),
    ("NEW_STP", "OP_NEW", "stp"),
    ("NEW_BUDGET", "A_NEW", "budget|None"),
    ("AMEND_QTY", "OP_AMEND", "qty|None"),
    ("AMEND_PRICE", "OP_AMEND", "price|None"),
    ("REJECT_REASON", "OP_REJECT", "reason"),
    ("REJECT_CODE", "OP_REJECT", "code"),
    ("CANCEL_ALL_AFTER", "OP_CANCEL_ALL", "after"),
    ("EV_KIND", "EV_TRADE", "EV_TRADE"),
    ("EV_SEQ", "EV_ACCEPTED", "seq"),
    ("EV_SYMBOL", "EV_CANCELLED", "symbol"),
    ("EV_ID", "EV_REJECTED", "id"),
    ("TRADE_PRICE", "EV_TRADE", "price"),
    ("TRADE_QTY", "EV_TRADE", "qty"),
    ("TRADE_TAKER", "EV_TRADE", "taker_id"),
    ("TRADE_MAKER", "EV_TRADE", "maker_id"),
    ("TRADE_SIDE", "EV_TRADE", "taker_side"),
    ("TRADE_ID", "EV_TRADE", "trade_id"),
    ("CANCELLED_REASON", "EV_CANCELLED", "reason"),
    ("CANCELLED_QTY", "EV_CANCELLED", "qty"),
    ("REJECTED_REASON", "EV_REJECTED", "reason"),
    ("REJECTED_CODE", "EV_REJECTED", "code"),
    ("AMENDED_QTY", "EV_AMENDED", "qty"),
    ("AMENDED_PRICE", "EV_AMENDED", "price"),
    ("HANDOFF_TO", "OP_HANDOFF", "to shard"),
    ("ADOPT_FROM", "OP_ADOPT", "from shard"),
    ("ADOPT_SEQ", "OP_ADOPT", "from seq"),
    ("MOVE_STATE", "OP_ADOPT", "pair state"),
    ("MOVED_TO", "EV_MOVED", "to shard"),
    ("MOVED_TRADE_ID", "EV_MOVED", "trade_id"),
    ("MOVED_ORDERS", "EV_MOVED", "orders"),
    ("ADOPTED_FROM", "EV_ADOPTED", "from shard"),
    ("ADOPTED_SEQ", "EV_ADOPTED", "from seq"),
    ("ADOPTED_TRADE_ID", "EV_ADOPTED", "trade_id"),
    ("ADOPTED_ORDERS", "EV_ADOPTED", "orders"),
    ("TRIGGERED_LAST", "EV_TRIGGERED", "last"),
    ("TRIGGERED_AT", "EV_TRIGGERED", "trigger"),
    ("XFER_ACCOUNT", "A_DEPOSIT", "account"),
    ("XFER_ASSET", "A_DEPOSIT", "asset"),
    ("XFER_AMOUNT", "A_WITHDRAW", "amount"),
    ("XFER_REF", "A_WITHDRAW", "ref"),
    ("S_KIND", "S_TRADE", "S_TRADE"),
    ("S_ESHARD", "S_CANCELLED", "eshard"),
    ("S_ESEQ", "S_REJECTED", "eseq"),
    ("S_PREV", "S_AMENDED", "prev"),
    ("S_SYMBOL", "S_TRADE", "symbol"),
    ("AE_KIND", "AE_BALANCE", "AE_BALANCE"),
    ("AE_SEQ", "AE_FEES", "seq"),
    ("BALANCE_ACCOUNT", "AE_BALANCE", "account"),
    ("BALANCE_ASSET", "AE_BALANCE", "asset"),
    ("BALANCE_AVAILABLE", "AE_BALANCE", "available"),
    ("BALANCE_HELD", "AE_BALANCE", "held"),
    ("FEES_ASSET", "AE_FEES", "asset"),
    ("FEES_TOTAL", "AE_FEES", "total"),
    ("FILL_ACCOUNT", "AE_FILL", "account"),
    ("FILL_REF", "AE_FILL", "ref"),
    ("FILL_BPS", "AE_FILL", "bps"),
    ("FILL_FEE", "AE_FILL", "fee"),
    ("FILL_ASSET", "AE_FILL", "asset"),
    ("AREJ_ACCOUNT", "AE_REJECTED", "account"),
    ("AREJ_REF", "AE_REPEATED", "ref"),
    ("AREJ_REASON", "AE_REJECTED", "reason"),
    ("AREJ_CODE", "AE_REJECTED", "code"),
    ("FWD_ESHARD", "AE_FORWARD", "eshard"),
    ("FWD_PREV", "AE_FORWARD", "prev"),
    ("FWD_CMD", "AE_FORWARD", "cmd"),
    ("GAP_ESHARD", "AE_GAP", "eshard"),
    ("ANOMALY_ESHARD", "AE_ANOMALY", "eshard"),
]

# Modules read by name since the layouts got names: none may index a layout tuple (a variable
# of these names) with a bare int again. (The engine's matching loop and the node files other
# work owns are not in the list.)
NAMED_MODULES = [
    "shardex/accounts/core.py",
    "shardex/accounts/feed.py",
    "shardex/accounts/holds.py",
    "shardex/accounts/ledger.py",
    "shardex/accounts/machines.py",
    "shardex/accounts/moves.py",
    "shardex/accounts/orders.py",
    "shardex/accounts/settlements.py",
    "shardex/accounts/transfers.py",
    "shardex/cli/market.py",
    "shardex/client/_async/client.py",
    "shardex/client/core.py",
    "shardex/client/fatesteps.py",
    "shardex/client/replies.py",
    "shardex/client/results.py",
    "shardex/datadir.py",
    "shardex/node/account_service.py",
    "shardex/node/accounts.py",
    "shardex/node/fencing.py",
    "shardex/node/standby.py",
    "shardex/node/bridge/entries.py",
    "shardex/node/bridge/redis_writer.py",
    "shardex/node/bridge/replies.py",
    "shardex/node/bridge/status.py",
    "shardex/node/bridge/topology.py",
    "shardex/node/bridge/tracker.py",
    "shardex/tools/fills.py",
    "shardex/tools/journals.py",
    "shardex/tools/loadproc.py",
    "shardex/tools/replay.py",
    "shardex/tools/workload.py",
    "shardex/wire/account_events.py",
    "shardex/wire/protocol.py",
    "shardex/wire/pub.py",
    "shardex/wire/schema.py",
    "shardex/wire/transport.py",
]
LAYOUT_VARIABLES = {
    *("cmd", "checked", "inner", "acmd", "t"),  # commands
    *("ev", "e", "msg", "m", "fwd"),  # events, settlements, link messages
    *("r", "h", "row", "cell", "bid", "ask", "reply"),  # order rows, balance cells, levels
}


def _spec_layouts() -> dict[str, list[str]]:
    """``(KIND, field, ...)`` tuples as the two codes modules' docstrings write them."""
    out: dict[str, list[str]] = {}
    for doc in (engine_codes.__doc__ or "", account_codes.__doc__ or ""):
        for body in re.findall(r"``\(([A-Z_]+(?:\s*\|\s*[A-Z_]+)?,[^`]*)\)``", doc):
            fields = [f.strip().strip("[]") for f in re.split(r",\s*|\[,\s*", body)]
            for kind in fields[0].split("|"):
                out[kind.strip()] = [kind.strip(), *fields[1:]]
    return out


def test_every_name_is_its_position_in_the_specified_layout() -> None:
    layouts = _spec_layouts()
    assert {"OP_NEW", "EV_TRADE", "A_NEW", "S_TRADE", "AE_GAP", "A_WITHDRAW"} <= set(layouts)
    for name, kind, field in SPEC:
        fields = layouts[kind]
        expect = 0 if field == kind else fields.index(field)
        assert getattr(L, name) == expect, (name, kind, fields)
    assert len(layouts["OP_NEW"]) == L.NEW_WIDTH and len(layouts["EV_TRADE"]) == L.TRADE_WIDTH
    assert len(layouts["A_NEW"]) == L.NEW_BUDGET + 1


def test_the_names_read_what_the_encoders_wrote() -> None:
    m = MARKETS[SYMBOL]
    new = command_from_json({"op": "new", "symbol": SYMBOL, "id": "s1", "account": "bob",
                             "side": "sell", "type": "limit", "price": "100", "qty": "3",
                             "tif": "gtc", "stp": "cancel_maker"}, MARKETS)  # fmt: skip
    assert (new[L.CMD_OP], new[L.CMD_SYMBOL], new[L.CMD_ID], new[L.CMD_ACCOUNT]) == (
        OP_NEW, SYMBOL, "s1", "bob")  # fmt: skip
    assert new[L.NEW_PRICE] == m.to_ticks(Decimal(100)) and new[L.NEW_QTY] == m.to_lots(Decimal(3))
    assert (new[L.NEW_SIDE], new[L.NEW_TYPE], new[L.NEW_STP]) == (1, 0, 2)
    amend = command_from_json({"op": "amend", "symbol": SYMBOL, "id": "s1", "account": "bob",
                               "qty": "1"}, MARKETS)  # fmt: skip
    one = m.to_lots(Decimal(1))
    assert amend[L.AMEND_QTY] == one and amend[L.AMEND_PRICE] is None
    buy = (OP_NEW, SYMBOL, "b1", "al", 0, 0, new[L.NEW_PRICE], one, 1, False, 0)
    engine, out = Engine(MARKETS), []
    for cmd in (new, buy, amend, (OP_CANCEL, SYMBOL, "s1", "bob"), (OP_CANCEL, "X", "z", "al")):
        engine.apply(cmd, out)
    by_kind: dict[int, tuple] = {}
    for ev in out:
        by_kind.setdefault(ev[L.EV_KIND], ev)  # (the first of each kind)
    trade = by_kind[EV_TRADE]
    assert (trade[L.TRADE_TAKER], trade[L.TRADE_MAKER], trade[L.TRADE_SIDE]) == ("b1", "s1", 0)
    assert trade[L.TRADE_QTY] == one and trade[L.TRADE_PRICE] == new[L.NEW_PRICE]
    assert by_kind[EV_ACCEPTED][L.EV_ID] == "s1" and by_kind[EV_ACCEPTED][L.EV_SYMBOL] == SYMBOL
    assert by_kind[EV_AMENDED][L.AMENDED_QTY] == one
    assert by_kind[EV_AMENDED][L.AMENDED_PRICE] == new[L.NEW_PRICE]
    cancelled = by_kind[EV_CANCELLED]
    assert cancelled[L.CANCELLED_REASON] == "user" and cancelled[L.CANCELLED_QTY] == one
    assert by_kind[EV_REJECTED][L.REJECTED_CODE] == REJ_UNKNOWN_SYMBOL
    assert [ev[L.EV_SEQ] for ev in out] == list(range(1, len(out) + 1))
    stamped, plain = unpackb(encode_events(0, out, epoch=7)), unpackb(encode_events(0, out))
    assert stamped[L.PUB_EPOCH] == 7 and len(plain) == L.PUB_EPOCH
    assert decode_envelope(encode_events(0, out, epoch=7))[2] == 7


def test_the_account_names_read_what_the_account_machine_wrote() -> None:
    machine = AccountMachineFactory(0, 1, lambda _s: 3).new(MARKETS)
    usd = machine.core.table.to_units("USD", Decimal(1000))
    out: list[tuple] = []
    machine.apply((A_DEPOSIT, "al", "USD", usd, "d1"), out)
    (bal,) = out
    assert bal[L.AE_KIND] == AE_BALANCE and bal[L.BALANCE_ACCOUNT] == "al"
    assert (bal[L.BALANCE_ASSET], bal[L.BALANCE_AVAILABLE], bal[L.BALANCE_HELD]) == ("USD", usd, 0)
    m = MARKETS[SYMBOL]
    price, qty = m.to_ticks(Decimal(100)), m.to_lots(Decimal(1))
    order = (A_NEW, SYMBOL, "o1", "al", 0, 0, price, qty, 0, False, 0, None)
    machine.apply(order, out)
    (fwd,) = [ev for ev in out if ev[L.AE_KIND] == AE_FORWARD]
    assert fwd[L.FWD_ESHARD] == 3 and fwd[L.FWD_PREV] == 0
    assert fwd[L.FWD_CMD] == (OP_NEW, *order[1 : L.NEW_WIDTH])
    msgs, complete = machine.resend(3, 0)
    assert complete and msgs == [(fwd[L.AE_SEQ], 0, fwd[L.FWD_CMD])]
    (msg,) = msgs
    assert (msg[L.LINK_SEQ], msg[L.LINK_PREV]) == (fwd[L.AE_SEQ], 0)
    assert msg[L.LINK_CMD][L.CMD_OP] == OP_NEW
    (row,) = held_rows(machine.core.open_by, 0)
    assert (row[L.ROW_ACCOUNT], row[L.ROW_SYMBOL], row[L.ROW_ID], row[L.ROW_SIDE]) == (
        "al", SYMBOL, "o1", 0)  # fmt: skip
    assert (row[L.ROW_OPEN], row[L.ROW_PRICE]) == (order[L.NEW_QTY], order[L.NEW_PRICE])
    assert row[L.ROW_CAP] >= row[L.ROW_PRICE] and row[L.ROW_PENDING] == 0
    assert row[L.ROW_HELD] == usd - machine.core.balance("al", "USD")[0] > 0


@pytest.mark.parametrize("path", NAMED_MODULES)
def test_no_bare_layout_index_is_left(path: str) -> None:
    tree = ast.parse((ROOT / path).read_text())
    bare = [
        f"{path}:{node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id in LAYOUT_VARIABLES
        and isinstance(node.slice, ast.Constant)
        and type(node.slice.value) is int
    ]
    assert not bare, "use the names of shardex.wire.layouts: " + ", ".join(bare)

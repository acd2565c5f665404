"""The edges of expiring orders and cancel-all: the JSON schema, the wire's edge check, the
account tier's forward, and the bridge's ``shardex:orders:<j>`` entry of a gtd order."""

from __future__ import annotations

from shardex.accounts.codes import AE_FORWARD
from shardex.engine import DEFAULT_MARKETS
from shardex.engine.codes import (
    DAY,
    GTD,
    OP_CANCEL_ALL,
    OP_NEW,
    OP_REJECT,
    REJ_MALFORMED,
)
from shardex.engine.expiry import CANCEL_ALL_AFTER, OPTS_WIDTH
from shardex.history.rows import order_row
from shardex.wire import layouts
from shardex.wire.options import split_options
from shardex.wire.protocol import edge_command
from shardex.wire.schema import command_from_json, command_to_json
from tests.support.history import order_entry

NEW = {"op": "new", "symbol": "BTC-USD", "id": "g1", "account": "al", "side": "buy",
       "type": "limit", "price": "100.00", "qty": "1.0000"}  # fmt: skip


def test_the_engine_and_the_wire_agree_on_positions():
    assert OPTS_WIDTH == layouts.NEW_OPTS + 1 and CANCEL_ALL_AFTER == layouts.CANCEL_ALL_AFTER


def test_json_gtd_day_and_cancel_all_round_trip():
    gtd = command_from_json({**NEW, "tif": "gtd", "expire": 1_800_000_000_000}, DEFAULT_MARKETS)
    assert gtd[layouts.NEW_TIF] == GTD and gtd[layouts.NEW_OPTS] == {"expire": 1_800_000_000_000}
    assert gtd[layouts.NEW_BUDGET] is None and len(gtd) == OPTS_WIDTH
    assert command_to_json(gtd, DEFAULT_MARKETS) == {**NEW, "tif": "gtd",
                                                     "expire": 1_800_000_000_000}  # fmt: skip
    day = command_from_json({**NEW, "tif": "day"}, DEFAULT_MARKETS)
    assert len(day) == layouts.NEW_WIDTH and day[layouts.NEW_TIF] == DAY
    bad = command_from_json({**NEW, "tif": "gtd", "expire": "2026-12-07"}, DEFAULT_MARKETS)
    assert bad[0] == OP_REJECT and bad[layouts.REJECT_CODE] == REJ_MALFORMED
    for obj, cmd in (
        ({"op": "cancel_all", "account": "al"}, (OP_CANCEL_ALL, "", "", "al")),
        ({"op": "cancel_all", "account": "al", "symbol": "BTC-USD", "id": "r"},
         (OP_CANCEL_ALL, "BTC-USD", "r", "al")),
        ({"op": "cancel_all", "account": "al", "symbol": "BTC-USD", "after": 5000},
         (OP_CANCEL_ALL, "BTC-USD", "", "al", 5000)),
    ):  # fmt: skip
        assert command_from_json(obj, DEFAULT_MARKETS) == cmd
        assert command_to_json(cmd, DEFAULT_MARKETS) == obj
        assert edge_command(cmd) == cmd


def test_the_edge_bounds_the_options_map():
    base = (OP_NEW, "BTC-USD", "g1", "al", 0, 0, 100, 5, GTD, False, 0, None)
    assert edge_command((*base, {"expire": 5})) == (*base, {"expire": 5})
    for opts in ({"k" * 65: 1}, {str(i): i for i in range(9)}, {"expire": [1]}, [1], "x"):
        got = edge_command((*base, opts))
        assert got[0] == OP_REJECT and got[layouts.REJECT_CODE] == REJ_MALFORMED, opts
        assert split_options((*base, opts)) == ((*base, opts), None)
    assert split_options((*base, {"expire": 5})) == (base, {"expire": 5})
    assert edge_command((OP_CANCEL_ALL, "", "r", "al", 1, 2))[0] == OP_REJECT


def test_a_forwarded_gtd_order_gets_its_orders_entry_with_its_expire_time():
    cmd = (OP_NEW, "BTC-USD", "g1", "al", 0, 0, 10_000, 25, GTD, False, 0, None,
           {"expire": 1_800_000_000_000})  # fmt: skip
    eid, f = order_entry((AE_FORWARD, 7, 0, 0, cmd), shard=1)
    assert eid == "7-0" and f["tif"] == "gtd" and f["expire"] == "1800000000000"
    assert order_row(1, f)[7] == "gtd"

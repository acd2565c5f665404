"""``shardex replay`` and markets files: once as a real subprocess like a user would, the other
cases in this process (click's runner: the same code from argv and stdin to exit status and
output, without a Python start per case)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest

from shardex.config import load_markets
from shardex.engine import MarketError
from tests.support.cli import invoke_cli

DESIGN_EXAMPLES = b"""\
{"op":"new","symbol":"BTC-USD","id":"o-1","account":"alice","side":"buy","type":"limit","price":"30000.50","qty":"0.25","tif":"gtc","post_only":false}
{"op":"new","symbol":"BTC-USD","id":"o-2","account":"bob","side":"sell","type":"market","qty":"0.1"}
{"op":"cancel","symbol":"BTC-USD","id":"o-1","account":"alice"}
{"op":"amend","symbol":"BTC-USD","id":"o-1","account":"alice","qty":"0.10"}
"""


def replay(stdin: bytes, *args: str, real: bool = False) -> subprocess.CompletedProcess:
    """``shardex replay - ARGS`` reading ``stdin``: in this process, or (``real``) as
    ``python -m shardex.cli``."""
    if not real:
        return invoke_cli("replay", "-", *args, input=stdin)
    return subprocess.run(
        [sys.executable, "-m", "shardex.cli", "replay", "-", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
    )


def events(proc: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


def test_replay_design_examples():
    proc = replay(DESIGN_EXAMPLES, "--summary", real=True)
    assert proc.returncode == 0, proc.stderr
    evs = events(proc)
    assert [e["ev"] for e in evs] == ["accepted", "accepted", "trade", "cancelled", "rejected"]
    assert [e["seq"] for e in evs] == [1, 2, 3, 4, 5]
    assert evs[2] == {
        "ev": "trade",
        "symbol": "BTC-USD",
        "price": "30000.50",
        "qty": "0.1000",
        "taker": "o-2",
        "maker": "o-1",
        "taker_side": "sell",
        "trade_id": 1,
        "seq": 3,
    }
    assert evs[4]["reason"] == "order is not live (unknown or finished)"
    assert b"commands 4  events 5  trades 1  rejects 1" in proc.stderr


def test_replay_is_deterministic(tmp_path):
    src = tmp_path / "cmds.jsonl"
    src.write_bytes(DESIGN_EXAMPLES * 50)
    a = invoke_cli("replay", str(src))
    out = tmp_path / "events.jsonl"
    b = invoke_cli("replay", str(src), "-o", str(out))
    assert a.returncode == b.returncode == 0
    assert a.stdout == out.read_bytes() and len(a.stdout.splitlines()) > 100


def test_replay_garbage_gives_line_numbered_rejects_and_continues():
    garbage = (
        b"not json at all\n"
        b"\n"
        b"[1, 2, 3]\n" + os.urandom(64).replace(b"\n", b"") + b"\n"
        b'{"op":"new","symbol":"BTC-USD","id":"x","account":"a","side":"buy","type":"limit",'
        b'"price":"1.001","qty":"1"}\n'
        b'{"op":"new"' + b"[" * 100000 + b"\n"
        b'{"op":"new","symbol":"BTC-USD","id":"ok","account":"a","side":"buy","type":"limit",'
        b'"price":"1","qty":"1"}\n'
        b"\xff\xfe\x00garbage"
    )
    proc = replay(garbage)
    assert proc.returncode == 0, proc.stderr
    assert b"Traceback" not in proc.stderr
    evs = events(proc)
    assert [e["ev"] for e in evs] == ["rejected"] * 5 + ["accepted", "rejected"]
    assert evs[0]["reason"].startswith("line 1: invalid JSON")
    assert evs[1]["reason"] == "line 3: expected a JSON object, got list"
    assert evs[2]["reason"].startswith("line 4: ")
    assert evs[3]["reason"] == "line 5: price not on tick grid 0.01"
    assert evs[4]["reason"].startswith("line 6: invalid JSON")
    assert evs[6]["reason"].startswith("line 8: ")


def test_replay_custom_markets(tmp_path):
    markets = tmp_path / "m.toml"
    markets.write_text('[markets.AAPL-USD]\ntick = "0.01"\nlot = "1"\nmax_price = "5000"\n')
    cmd = (
        b'{"op":"new","symbol":"AAPL-USD","id":"a","account":"x","side":"buy",'
        b'"type":"limit","price":"189.25","qty":"10"}\n'
    )
    proc = replay(cmd, "--markets", str(markets))
    assert events(proc)[0]["ev"] == "accepted"
    proc = replay(cmd)
    assert events(proc)[0]["reason"] == "line 1: unknown symbol AAPL-USD"


def test_replay_bad_markets_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[markets.X]\ntick = 'zero'\nlot = '1'\n")
    proc = replay(b"", "--markets", str(bad))
    assert proc.returncode != 0
    assert b"markets.X" in proc.stderr and b"Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "text,message",
    [
        ("[markets.X]\ntick = '0.01'\n", "needs tick and lot"),
        ("[markets.X]\ntick = '0.01'\nlot = '1'\ncolour = 1\n", "unknown keys"),
        ("[markets.X]\ntick = '-1'\nlot = '1'\n", "tick must be a positive decimal"),
        ("nothing = 1\n", "expected one or more [markets.SYMBOL] tables"),
        ("[markets\n", "not valid TOML"),
    ],
)
def test_markets_file_errors(tmp_path, text, message):
    f = tmp_path / "m.toml"
    f.write_text(text)
    with pytest.raises(MarketError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_markets(f)


def test_replay_help():
    proc = invoke_cli("replay", "--help")
    assert proc.returncode == 0 and b"--summary" in proc.stdout


def test_markets_from_table_is_pure_and_names_its_source():
    from shardex.config import markets_from_table

    m = markets_from_table({"AAPL-USD": {"tick": "0.01", "lot": 1}}, "cluster table")
    assert m["AAPL-USD"].tick == Decimal("0.01") and m["AAPL-USD"].max_qty == Decimal(10**9)
    with pytest.raises(MarketError, match=r"^cluster table: markets.X needs tick and lot$"):
        markets_from_table({"X": {"tick": "1"}}, "cluster table")

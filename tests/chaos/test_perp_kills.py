"""kill -9 of a perp pair's engine shard in the middle of a big liquidation loses nothing
(real processes: ``shardex up``, ZeroMQ, the journal on disk; docs/perps.md).

2,000 longs of 10 lots each, all below maintenance at one crash index: the index command
takes every one over in one go (book fills for the first 1,000, auto-deleveraging against
the market maker for the rest), and the shard is killed while it works (once it has burnt
30 ms of CPU on the command, plus up to 20 ms: mid-command, unless the box ran it faster;
the test holds either way), or once the index was acknowledged. Whatever the kill
hit, the journal is the truth: an index that was acknowledged is in it; an index in it
replays to all 2,000 take-overs, one not in it to none (one command: never half); the
restarted shard serves exactly the replayed state; and the feed's next index (sent again,
as the feed does every round) finishes the job, after which no position is below
maintenance and Σ equity + fund = Σ margin moved in."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from shardex.auth import KeyStore
from shardex.config import load_markets
from shardex.engine import Engine
from shardex.engine.codes import BUY, EV_ADL, EV_LIQUIDATION, GTC, LIMIT, OP_NEW, OP_TIME, SELL
from shardex.engine.liquidation import breaching
from shardex.engine.positions import equity
from shardex.journal import read_commands
from tests.support.cluster import Cluster
from tests.support.perps import PERP, markets_toml

pytestmark = pytest.mark.timeout(300)

LONGS = 2_000  # (their take-overs: ~0.1 s of engine time in one command, interpreted)
FILLED = 1_000  # longs the market maker's bids can take; the rest are deleveraged


def _raw(oid: str, account: str, side: int, price: int, qty: int) -> tuple:
    return (OP_NEW, PERP, oid, account, side, LIMIT, price, qty, GTC, False, 0)


def _setup(cluster: Cluster, feed: Path) -> None:
    """Margin for the market maker and the longs, an index at 30,000, each long buying 10
    lots from the market maker's ask, then its bids at 26,900 for ``FILLED`` × 10 lots."""
    with cluster.client(key=feed) as f:
        assert f.set_index(PERP, "30000")["ok"]
    with cluster.client() as c:
        assert c.set_margin("mm", PERP, "1000000")["ok"]
        for n in range(LONGS):
            assert c.set_margin(f"l{n}", PERP, "40")["ok"]
        cmds = [_raw("ask", "mm", SELL, 300_000, 10 * LONGS)]
        cmds += [_raw(f"b{n}", f"l{n}", BUY, 300_000, 10) for n in range(LONGS)]
        cmds.append(_raw("bid", "mm", BUY, 269_000, 10 * FILLED))
        for err, _ in c.submit_raw(cmds, batch=50):
            assert err is None, err


def _cpu_ticks(pid: int) -> int:
    """The process's user + system CPU time in clock ticks (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _busy(pid: int, before: int, acked: list) -> bool:
    """Wait until the shard has burnt 3 more ticks of CPU (30 ms: it is applying the index,
    the only work it has) or answered; a little more randomness on top. False: neither
    within 5 s."""
    deadline = time.monotonic() + 5
    while not acked and _cpu_ticks(pid) < before + 3:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    time.sleep(random.uniform(0, 0.02))
    return True


def _serving_again(cluster: Cluster) -> None:
    """Wait until the restarted shard has recovered and answers through the router."""
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "the shard did not come back"
        if cluster.output().count("recovered shard 0") >= 2:
            with cluster.client(timeout=1.0) as c:
                if "seq" in c.status()[0]:
                    return
        time.sleep(0.1)


def _replay(data: Path, markets: dict) -> tuple[Engine, list]:
    eng, events = Engine(markets), []
    for _, cmd in read_commands(data / "shard-0"):
        out: list = []
        eng.apply(cmd, out)
        if cmd[0] != OP_TIME:
            events.extend(out)
    return eng, events


@pytest.mark.parametrize("moment", ["mid-command", "acknowledged"])
def test_kill9_mid_liquidation_loses_nothing(tmp_path: Path, moment: str) -> None:
    markets_file = tmp_path / "markets.toml"
    markets_file.write_text(markets_toml(oracle_staleness_ms=3_600_000))
    markets = load_markets(str(markets_file))
    data = tmp_path / "data"
    cluster = Cluster(1, "--markets", str(markets_file), data_dir=str(data))
    acked: list = []
    try:
        assert cluster.keys_dir is not None
        KeyStore(cluster.keys_dir).process_key("feed", "feed")
        feed = cluster.keys_dir / "feed.key"
        _setup(cluster, feed)

        def crash() -> None:
            try:
                with cluster.client(key=feed, timeout=5.0) as f:
                    acked.append(f.set_index(PERP, "25000"))
            except Exception as exc:  # noqa: BLE001 - the kill may cut the reply
                acked.append(exc)

        pid = cluster.shard_pid(0)
        before = _cpu_ticks(pid)
        t = threading.Thread(target=crash)
        t.start()
        if moment == "mid-command":
            assert _busy(pid, before, acked)  # (the shard is inside the index command)
        else:
            t.join(30)
        os.kill(pid, signal.SIGKILL)
        t.join(30)
        _serving_again(cluster)
        recovered, events = _replay(data, markets)
        taken = [ev for ev in events if ev[0] == EV_LIQUIDATION]
        if isinstance(acked[0], dict) and acked[0].get("ok"):  # (acknowledged: durable)
            assert len(taken) == LONGS
        else:
            assert moment == "mid-command", acked
        assert len(taken) in (0, LONGS)  # (one command: all or nothing)
        print(f"kill: index acknowledged {acked}, {len(taken)} take-overs in the journal")
        with cluster.client() as c:
            (st,) = c.status()
            assert st["seq"] == recovered.seq
            live = c.market_rules()[PERP]["funding"]
            unit = Decimal("0.0001")
            assert Decimal(live["fund"]) == recovered.books[PERP].positions.fund * unit
            for n in (0, FILLED - 1, FILLED, LONGS - 1):
                (p,) = c.positions(f"l{n}")
                row = recovered.books[PERP].positions.accounts[f"l{n}"]
                assert Decimal(p["size"]) == row[0] * Decimal("0.001")
                assert Decimal(p["collateral"]) == row[3] * unit
        with cluster.client(key=feed) as f:  # (the feed's next round)
            assert f.set_index(PERP, "25000")["ok"]
    finally:
        cluster.stop()
    final, events = _replay(data, markets)
    book = final.books[PERP]
    pos, mark = book.positions, book.oracle.mark
    taken = [ev for ev in events if ev[0] == EV_LIQUIDATION]
    assert len(taken) == LONGS and len({ev[3] for ev in taken}) == LONGS
    assert sum(1 for ev in events if ev[0] == EV_ADL) == LONGS - FILLED
    assert not breaching(pos.accounts, mark, 1, 20) and pos.uncovered == 0
    moved_in = 10**6 * 10**4 + LONGS * 40 * 10**4
    assert sum(equity(r, mark) for r in pos.accounts.values()) + pos.fund == moved_in
    assert all(pos.accounts[f"l{n}"][0] == 0 for n in range(LONGS))

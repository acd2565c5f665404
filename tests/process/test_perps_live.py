"""A perp market on a real cluster: ``shardex up`` starts the feed, index and mark move, only
a feed key may send an index, and a restart replays the same marks (docs/perps.md)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardex.client import ShardexError
from tests.support.cluster import ROOT, Cluster

PERP = "BTCPERP-USD"
MARKETS = f"""
[markets.{PERP}]
kind = "perp"
tick = "0.1"
lot = "0.001"
initial_margin = "0.1"
maintenance_margin = "0.05"
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("perps")
    markets = root / "markets.toml"
    markets.write_text(MARKETS)
    yield markets, root / "data"


def _perp(cluster: Cluster) -> dict:
    with cluster.client() as c:
        return c.market_rules()[PERP]


def _wait_for(cluster: Cluster, done, what: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    seen: dict = {}
    while time.monotonic() < deadline:
        seen = _perp(cluster)
        if done(seen):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout}s; last {seen}")


def _journal_indexes(data: Path, markets: Path) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-m", "shardex.cli", "replay", "--journal", str(data / "shard-0"),
         "--markets", str(markets)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=True,
    ).stdout  # fmt: skip
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [e for e in events if e.get("ev") == "index"]


def test_the_feed_moves_index_and_mark_and_a_restart_replays_them(files) -> None:
    markets, data = files
    cluster = Cluster(1, "--markets", str(markets), data_dir=str(data),
                      without=("candles-worker", "history-writer"))  # fmt: skip
    try:
        first = _wait_for(cluster, lambda r: "index" in r, "a first index")
        assert first["kind"] == "perp" and first["initial_margin"] == "0.1"
        assert first["stale"] is False
        _wait_for(cluster, lambda r: r.get("index") != first["index"], "the index moving")
        with cluster.client() as c, pytest.raises(ShardexError) as refused:
            c.set_index(PERP, "30000")  # the admin's key is not a feed key
        assert refused.value.code == "not_allowed"
    finally:
        cluster.stop()
    # the same cluster again, without its feed: the recovered engine's index and mark are the
    # journal's last ones, and a replay of the journal computes the marks the live engine did
    again = Cluster(1, "--markets", str(markets), data_dir=str(data))
    try:
        after = _perp(again)
    finally:
        again.stop()
    indexes = _journal_indexes(data, markets)
    assert len(indexes) >= 2 and all(e["symbol"] == PERP for e in indexes)
    assert (first["index"], first["mark"]) in [(e["index"], e["mark"]) for e in indexes]
    assert (after["index"], after["mark"]) == (indexes[-1]["index"], indexes[-1]["mark"])

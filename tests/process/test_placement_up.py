"""A shard-count change over a data dir: ``shardex up --shards 3`` over a data dir written with
2 shards starts (a7c599a refused it), the placement map rebuilt from the journals keeps every
pair where its journal is, and routers, direct clients, ``shardex status`` and ``shardex
placement`` all follow the map."""

from __future__ import annotations

import json
from pathlib import Path

from shardex.engine import DEFAULT_MARKETS
from shardex.placement import DirStore, default_owner
from tests.support.cli import invoke_cli
from tests.support.cluster import Cluster

SYMBOLS = sorted(DEFAULT_MARKETS)


def _rest(cluster: Cluster) -> dict[str, tuple]:
    """A resting bid and ask on every default market; each pair's book."""
    books = {}
    with cluster.client(account="alice") as c:
        for s in SYMBOLS:
            assert c.place(s, "buy", "1", "10", id=f"{s}-b").ok
            assert c.place(s, "sell", "2", "20", id=f"{s}-a").ok
        for s in SYMBOLS:
            b = c.book(s)
            books[s] = (b["bids"], b["asks"])
    return books


def test_up_with_three_shards_over_a_two_shard_data_dir_keeps_every_book(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cluster = Cluster(2, data_dir=str(data))
    try:
        with cluster.client() as c:
            was = {s: i for i, t in enumerate(c.topology()["topology"]) for s in SYMBOLS
                   if default_owner(s, 2) == i}  # fmt: skip
        before = _rest(cluster)
    finally:
        cluster.stop()
    cluster = Cluster(3, data_dir=str(data))
    try:
        stored = DirStore(data).load()
        assert stored is not None and stored.shards == 3
        assert {s: stored.owner(s) for s in SYMBOLS} == was  # every pair where its journal is
        moved = {s for s in SYMBOLS if default_owner(s, 3) != was[s]}
        assert moved and set(stored.pins) == moved  # only those the default would move
        for direct in (False, True):
            with cluster.client(account="alice", direct=direct) as c:
                for s, book in before.items():
                    b = c.book(s)
                    assert (b["bids"], b["asks"]) == book, (s, direct)
        with cluster.client(account="bob") as c:  # each pair still trades on its shard
            for s in SYMBOLS:
                r = c.place(s, "buy", "2", "20", id=f"{s}-x")
                assert r.ok and "trade" in [e["ev"] for e in r.events], (s, r.events)
        out = invoke_cli("placement", "--endpoint", cluster.endpoint, *cluster.key_args(), "--json")
        assert out.returncode == 0, out.stderr.decode()
        shown = json.loads(out.stdout)
        assert shown["version"] == stored.version and shown["pins"] == dict(stored.pins)
        assert shown["pairs"] == [[s for s in SYMBOLS if was[s] == i] for i in range(3)]
        status = invoke_cli("status", "--endpoint", cluster.endpoint, *cluster.key_args(), "--json")
        assert json.loads(status.stdout)["pairs"] == shown["pairs"]
        text = invoke_cli("placement", "--data-dir", str(data)).stdout.decode()
        assert f"placement v{stored.version}: 3 shard(s)" in text and "shard 2: (no pair)" in text
    finally:
        cluster.stop()

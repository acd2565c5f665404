"""``shardex move PAIR --to I`` on a running cluster under load (real processes, real Redis, the
bridge): the pair's orders are answered ``moving`` for a moment, then go to the new shard; the
per-pair trades stream holds every trade once with contiguous trade ids across the move, and
each engine shard's events stream holds every event once (nothing lost, nothing twice)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from shardex.engine.codes import EV_REJECTED, EV_TRADE
from shardex.placement import default_owner
from tests.support.bridge import streams_caught_up
from tests.support.cluster import ROOT, Cluster
from tests.support.redis import RedisServer

pytestmark = pytest.mark.timeout(240)

P, Q = "BTC-USD", "ETH-USD"
SRC = default_owner(P, 2)
DST = 1 - SRC
MOVING = 17


class Load:
    """Crossing orders on P and Q until stopped; every trade it was told of, by pair and trade
    id, and the answers it got for P before and after the move."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.trades: dict[str, dict[int, tuple]] = {P: {}, Q: {}}
        self.moving = 0  # P's orders answered ``moving``
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.moved = threading.Event()
        self.ok_after_move = 0

    def run(self) -> None:
        n = 0
        try:
            with self.cluster.client(account="load", timeout=10) as c:
                while not self.stop.is_set():
                    cmds = []
                    for k in range(40):
                        n += 1
                        side = "buy" if (n // 2) % 2 else "sell"
                        cmds.append(c.codec.command(c.order((P, Q)[k % 2], side, "1", "100",
                                                            id=f"L{n}", account=f"a{n % 3}")))
                    for cmd, (err, evs) in zip(cmds, c.submit_raw(cmds, batch=20, window=2),
                                               strict=True):  # fmt: skip
                        self._count(cmd, err, evs)
                    time.sleep(0.02)
        except Exception as exc:
            self.errors.append(repr(exc))

    def _count(self, cmd: tuple, err: object, evs: list[tuple]) -> None:
        if err is not None:
            self.errors.append(str(err))
            return
        for e in evs:
            if e[0] == EV_TRADE:
                self.trades[e[2]][e[8]] = e
            elif e[0] == EV_REJECTED and e[5] == MOVING:
                self.moving += 1
        if cmd[1] == P and self.moved.is_set() and evs and evs[0][0] != EV_REJECTED:
            self.ok_after_move += 1


def test_a_pair_moves_under_load_with_nothing_lost_or_twice(redis_server: RedisServer) -> None:
    cluster = Cluster(2, redis=redis_server.url, data_dir=tempfile.mkdtemp(prefix="shardex-mv-"))
    try:
        with cluster.client(account="rest") as c:  # resting orders the load never crosses
            for k in range(5):
                assert c.place(P, "buy", "1", "90", id=f"R{k}").ok
        load = Load(cluster)
        thread = threading.Thread(target=load.run)
        thread.start()
        deadline = time.monotonic() + 60
        while len(load.trades[P]) < 50 and time.monotonic() < deadline and not load.errors:
            time.sleep(0.1)
        moved = subprocess.run(
            [sys.executable, "-m", "shardex.cli", "move", P, "--to", str(DST), "--data-dir",
             cluster.data_dir, "--endpoint", cluster.endpoint, *cluster.key_args()],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        load.moved.set()
        assert moved.returncode == 0, moved.stdout + moved.stderr
        for step in ("hand-off journaled by shard", "adopted by shard", "pins it to shard"):
            assert step in moved.stdout, moved.stdout
        deadline = time.monotonic() + 60
        while load.ok_after_move < 50 and time.monotonic() < deadline and not load.errors:
            time.sleep(0.1)
        load.stop.set()
        thread.join(60)
        assert not load.errors, load.errors[:5]
        assert load.ok_after_move >= 50, "the pair's orders never reached its new shard"
        with cluster.client(account="rest") as c:  # the resting orders came along
            assert c.book(P)["shard"] == DST
            assert c.cancel(P, "R0").events[0]["ev"] == "cancelled"
            amended = c.amend(P, "R1", price="91")
            assert amended.events[0]["ev"] == "amended", amended
        assert "(5 resting orders" in moved.stdout, moved.stdout
        r = redis_server.client()
        status = streams_caught_up(r, cluster)
        for i, seq in status.items():  # every event once, in order (lost 0, duplicated 0)
            ids = [int(e[0].split("-")[0]) for e in r.xrange(f"shardex:events:{i}")]
            assert ids == list(range(1, seq + 1)), f"shard {i}: holes or copies"
        for sym in (P, Q):
            entries = r.xrange(f"shardex:trades:{sym}")
            trade_ids = [int(f["trade_id"]) for _, f in entries]
            assert trade_ids == list(range(1, len(trade_ids) + 1)), f"{sym}: gap or copy"
            assert set(trade_ids) == set(load.trades[sym]), f"{sym}: a trade is missing"
        shards = {f["shard"] for _, f in r.xrange(f"shardex:trades:{P}")}
        assert shards == {str(SRC), str(DST)}  # the stream went on across the move
        again = subprocess.run(
            [sys.executable, "-m", "shardex.cli", "move", P, "--to", str(DST), "--data-dir",
             cluster.data_dir, "--endpoint", cluster.endpoint, *cluster.key_args()],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert again.returncode == 0 and "hand-off" not in again.stdout, again.stdout
        assert "Traceback" not in cluster.output()
    finally:
        cluster.stop()
    # restarted over the same data dir (``shardex up``'s data dir check reads the moves in the
    # journals: it starts): the routers route the pair by the stored map to its new shard
    restarted = Cluster(2, data_dir=cluster.data_dir)
    try:
        with restarted.client(account="rest") as c:
            book = c.book(P)
            assert book.get("shard") == DST, book  # routed by the stored map
            status = {s["shard"]: s["symbols"].get(P, 0) for s in c.status()}
            assert status == {SRC: 0, DST: 4}, status  # R1..R4 (R0 was cancelled)
    finally:
        restarted.stop()
        shutil.rmtree(cluster.data_dir, ignore_errors=True)

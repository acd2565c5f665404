"""Crossing load on two pairs through a real cluster with a bridge, and the checks that Redis
holds every trade a client was told of exactly once: shared by the bridge's process tests and its
chaos tests (kill -9 of the bridge or a shard, Redis down)."""

from __future__ import annotations

import threading
import time

import pytest

from shardex.engine.codes import EV_TRADE
from shardex.wire.protocol import shard_for
from tests.support.cluster import Cluster

SYMBOLS = ("BTC-USD", "ETH-USD")  # on different shards when N = 2
assert shard_for(SYMBOLS[0], 2) != shard_for(SYMBOLS[1], 2)


class Load:
    """Crossing orders on both symbols from a client; remembers every trade it was told of."""

    def __init__(
        self, cluster: Cluster, rounds: int, per_round: int = 200, pause: float = 0.0
    ) -> None:
        self.cluster = cluster
        self.pause = pause
        self.rounds = rounds
        self.per_round = per_round
        self.trades: dict[str, dict[int, tuple]] = {s: {} for s in SYMBOLS}
        self.errors: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        n = 0
        try:
            with self.cluster.client(account="load", timeout=5) as c:
                for _ in range(self.rounds):
                    cmds = []
                    for k in range(self.per_round):
                        n += 1
                        sym = SYMBOLS[k % 2]
                        side = "buy" if (n // 2) % 2 else "sell"
                        cmds.append(
                            c.codec.command(
                                c.order(sym, side, "1", "100", id=f"L{n}", account=f"a{n % 3}")
                            )
                        )
                    time.sleep(self.pause)
                    for err, evs in c.submit_raw(cmds, batch=50, window=4):
                        if err is not None:
                            self.errors.append(err)
                        for e in evs:
                            if e[0] == EV_TRADE:
                                self.trades[e[2]][e[1]] = e
        except Exception as exc:
            self.errors.append(repr(exc))
        finally:
            self.done.set()

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.run)
        t.start()
        return t

    @property
    def total(self) -> int:
        return sum(len(t) for t in self.trades.values())


def wait_for_streams(r, load: Load, cluster: Cluster, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    want = {s: len(load.trades[s]) for s in SYMBOLS}
    while time.monotonic() < deadline:
        have = {s: r.xlen(f"shardex:trades:{s}") for s in SYMBOLS}
        if have == want:
            return
        time.sleep(0.2)
    pytest.fail(f"streams never reached {want}: have {have}\n{cluster.output()[-3000:]}")


def check_exactly_once(r, load: Load, cluster: Cluster) -> None:
    assert load.total > 0
    assert "Traceback" not in cluster.output()
    with cluster.client() as c:
        status = {s["shard"]: s["seq"] for s in c.status()}
    for sym in SYMBOLS:
        entries = r.xrange(f"shardex:trades:{sym}")
        seqs = [int(e[0].split("-")[0]) for e in entries]
        assert seqs == sorted(load.trades[sym]), f"{sym}: stream seqs differ from client trades"
        for entry_id, f in entries:
            seq = int(entry_id.split("-")[0])
            ev = load.trades[sym][seq]
            assert (f["taker"], f["maker"], int(f["trade_id"]), int(f["seq"])) == (
                ev[5],
                ev[6],
                ev[8],
                seq,
            )
            assert f["price"] == "100.00" or f["price"] == "100.000"
        trade_ids = [int(f["trade_id"]) for _, f in entries]
        assert trade_ids == list(range(1, len(trade_ids) + 1))  # none lost, none twice
    # every event of every shard, contiguous from 1 to the shard's seq
    for shard, seq in status.items():
        ids = [int(e[0].split("-")[0]) for e in r.xrange(f"shardex:events:{shard}")]
        assert ids == list(range(1, seq + 1)), f"shard {shard} events stream has holes/dups"

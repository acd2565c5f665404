"""kill -9 of a shard under a stream of orders: no acknowledged order is lost and the seq
goes on (the journal replayed is the ground truth). Moved here from tests/process/test_journal.py:
it kills a process."""

from __future__ import annotations

import os
import signal
import threading
import time

from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.codes import OP_TIME
from shardex.journal import read_commands
from tests.support.cluster import Cluster


def test_kill9_shard_loses_no_acked_order_and_seq_continues(tmp_path):
    data = tmp_path / "data"
    cluster = Cluster(1, data_dir=str(data))
    acked: dict[str, tuple] = {}  # id -> raw events the client saw
    unacked: set[str] = set()
    stop = threading.Event()
    errors: list[str] = []

    def stream() -> None:
        n = 0
        try:
            with cluster.client(account="s", timeout=1.0) as c:
                while not stop.is_set():
                    batch = []
                    for _ in range(20):
                        n += 1
                        side = "buy" if n % 2 else "sell"
                        price = str(1000 + (n * 7919) % 11)
                        batch.append(c.order("BTC-USD", side, "1", price, id=f"k{n}"))
                    raw = c.submit_raw([c.codec.command(x) for x in batch], batch=20)
                    for cmd, (err, evs) in zip(batch, raw, strict=True):
                        if err is None:
                            acked[cmd["id"]] = evs
                        else:
                            unacked.add(cmd["id"])
        except Exception as exc:
            errors.append(repr(exc))

    t = threading.Thread(target=stream)
    t.start()
    try:
        _wait_for(lambda: len(acked) > 100 or errors, "100 acked orders before the kill")
        seq_before_kill = max(e[1] for evs in list(acked.values()) for e in evs)
        os.kill(cluster.shard_pid(0), signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # wait for the restarted shard to serve again
            # (count, not "after DIED": the supervisor may not have logged DIED yet)
            if cluster.output().count("recovered shard 0") >= 2:
                break
            time.sleep(0.1)

        # the old process is gone and the new one has recovered: acks from now on are its own
        # (a seq above ``seq_before_kill`` alone proves nothing: acks went on until the kill)
        acked_at_restart = len(acked)
        _wait_for(lambda: len(acked) > acked_at_restart + 20 or errors,
                  "orders acked by the restarted shard")  # fmt: skip
        stop.set()
        t.join(30)
        with cluster.client() as c:
            (st,) = c.status()
        log_text = cluster.output()
    finally:
        stop.set()
        cluster.stop()
    assert not errors, errors
    assert "DIED with signal 9" in log_text and "recovered shard 0" in log_text
    # Ground truth: the journal, replayed. Every acked command's events are in it, identical
    # (same seq, same trade ids), so every acked order is in the book or has its fills/cancel.
    replay = Engine(DEFAULT_MARKETS)
    by_id: dict[str, list] = {}
    all_events = []
    for _, cmd in read_commands(data / "shard-0"):
        out: list = []
        replay.apply(cmd, out)
        if cmd[0] == OP_TIME:
            continue  # (each batch's exchange time: no event)
        by_id.setdefault(cmd[2], []).append(tuple(out))
        all_events.extend(out)
    for oid, evs in acked.items():
        assert by_id.get(oid) == [tuple(tuple(e) for e in evs)], f"acked {oid} not durable"
    # nothing appears twice, unacked commands at most once; seqs never repeat or skip
    assert all(len(v) == 1 for v in by_id.values())
    seqs = [e[1] for e in all_events]
    assert seqs == list(range(1, len(seqs) + 1))
    after = [e[1] for oid, evs in acked.items() for e in evs if e[1] > seq_before_kill]
    assert after, "no order was acked after the restart"
    assert replay.seq == st["seq"] and replay.resting() == st["resting"]
    assert len(acked) > 100


def _wait_for(done, what: str, timeout: float = 30.0) -> None:
    """Wait on progress, not on a fixed sleep (a loaded box may take longer)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)

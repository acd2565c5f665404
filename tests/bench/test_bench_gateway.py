"""``bench/gateway.py`` runs end to end with tiny sizes: a real ``shardex up`` with its gateway,
real WebSocket client processes checking every seq chain, a real ``shardex loadgen``, signed
REST orders and the SDK's. What is checked is the report's shape and that no client saw a
silent gap or a wrong checksum, never how fast anything is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import gateway  # noqa: E402
import gwraw  # noqa: E402
from gwclients import Stats, Watcher  # noqa: E402

from shardex.gateway.fanout import batch_msg, encode  # noqa: E402
from shardex.gateway.wsframe import text_frame  # noqa: E402
from tests.support.bench import bench_env  # noqa: E402


def test_the_gateway_bench_reports_frames_latency_and_rest_against_the_sdk(capsys) -> None:
    r = subprocess.run(
        [sys.executable, "bench/gateway.py", "--clients", "4", "--procs", "2", "--seconds", "1",
         "--rate", "200", "--rest-seconds", "0.5", "--rest-rounds", "1",
         "--rest-concurrency", "2", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, env=bench_env(),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    (fleet,) = rep["fleets"]
    assert fleet["clients"] == 4 and fleet["reached"] == 4  # every client got the last trade
    assert fleet["silent_gaps"] == 0 and fleet["bad_checksums"] == 0
    assert fleet["trades"] > 0 and fleet["frames"] >= fleet["trades"] + fleet["books"]
    assert fleet["checked"] > 0  # the full books' CRC32 checks ran
    assert fleet["gateway_writes"]["rounds_per_s"] > 0 and "gateway" in fleet["cluster_cpu_pct"]
    assert fleet["gateway_wait_pct"] >= 0 and len(fleet["client_wait_pct"]) == 2
    lat, rd = fleet["latency_ms"], fleet["commit_to_redis_ms"]
    assert 0 < rd["p50"] <= rd["p99"] <= rd["max"]  # the same run's baseline, from Redis
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert len(fleet["client_cpu_pct"]) == 2 and fleet["gateway_cpu_s"] >= 0
    hops = fleet["hops_ms"]  # commit → frame cut into its hops, each measured in the run
    assert set(hops) == {"commit_redis", "commit_gateway_read", "gateway_read_written",
                         "commit_written", "written_client_read", "commit_frame"}  # fmt: skip
    assert all(hops[k]["p50"] is not None for k in hops)
    assert hops["commit_frame"]["p99"] == lat["p99"] and "loadgen" in fleet["cluster_cpu_pct"]
    assert 0 <= fleet["gateway_sys_share"] <= 1 and fleet["box_busy_pct"] > 0
    for path in ("rest", "sdk"):
        (rnd,) = rep["rest_vs_sdk"][path]
        assert rnd["errors"] == 0 and rnd["orders_per_s"] > 0 and rnd["p50_us"] > 0
    assert "[1/1] 4 WebSocket clients in 2 process(es)" in r.stderr  # progress on stderr

    gateway.print_table(rep)
    table = capsys.readouterr().out
    assert "| clients | frames/s | commit → frame p50 / p99 / max ms | commit → Redis" in table
    assert "| 4 | " in table and "| rest | 1 | " in table and "| sdk | 1 | " in table
    assert "| clients | commit → Redis | commit → gateway read | read → written |" in table


def test_the_gateway_bench_rejects_bad_client_counts() -> None:
    r = subprocess.run([sys.executable, "bench/gateway.py", "--clients", "10,x"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode != 0 and "--clients" in r.stderr


def test_the_raw_reader_splits_frames_and_checks_a_batch_from_its_head() -> None:
    trades = [{"seq": s, "prev_seq": p, "trade_id": s, "price": "1.00", "qty": "2", "side": "buy",
               "ts": 1_000 + s // 2} for p, s in ((4, 5), (5, 6), (6, 7))]  # fmt: skip
    batch = encode(batch_msg("X-Y", trades)).encode()
    big = b'{"type":"pad","x":"' + b"z" * 300 + b'"}'  # (a 126-length header)
    wire = text_frame(batch) + text_frame(big) + text_frame(b"{}")
    got, used = gwraw.frames(bytearray(wire[:-1]))  # the last frame not whole yet
    assert [bytes(p) for _, p in got] == [batch, big] and used == len(wire) - 4
    w, st = Watcher(["X-Y"], full_book=False), Stats()
    w.trade_last["X-Y"], w.trade_free["X-Y"] = 4, False
    assert gwraw.quick(w, bytearray(batch), st, True) == (True, None)
    assert (st.trades, st.silent_gaps, w.trade_last["X-Y"]) == (3, 0, 7)
    assert sorted(st.lat.values()) == [1, 2]  # two trades at one ts, one at another
    assert gwraw.quick(w, bytearray(batch), st, True) == (True, None)  # 7 again after 7
    assert st.silent_gaps == 1
    assert gwraw.quick(w, bytearray(b'{"type":"heartbeat"}'), st, True) == (False, None)

"""The operator page's numbers: ``opsview`` from fixed exposition texts (percentiles over the
window the way ``histogram_quantile`` computes them, rates, a counter reset, failovers from the
leader epoch), and ``GET /v1/ops`` on an in-process app with fake exporters (admin and reader
keys only, one scrape per second whoever asks, an exporter away said per source, a missing
replica-1 exporter not an error). Also the gateway's metrics exist before any client (a
dashboard's rate is 0, not "no data") and the page is served and linked."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest

from shardex.gateway.apikeys import ApiKeyRecord
from shardex.gateway.ops import Ops, OpsScraper, Target, targets
from shardex.gateway.opsview import OpsView, Snapshot, parse, quantile
from shardex.gateway.outbox import BEHIND, Outbox
from shardex.gateway.page import Page
from shardex.gateway.rest import Rest
from shardex.gateway.signing import ApiKey
from shardex.layout import Layout
from shardex.wire.codes import OPERATOR_REQUIRED, UNAUTHORIZED

BUCKETS = (0.001, 0.0025, 0.005, 0.01, float("inf"))


def _hist(name: str, label: str, value: str, counts: tuple[int, ...]) -> str:
    """Exposition lines of a histogram with cumulative ``counts`` per bucket of BUCKETS."""
    lines = [f"# TYPE {name} histogram"]
    for le, n in zip(BUCKETS, counts, strict=True):
        bound = "+Inf" if le == float("inf") else repr(le)
        lines.append(f'{name}_bucket{{le="{bound}",{label}="{value}"}} {n}')
    lines.append(f'{name}_count{{{label}="{value}"}} {counts[-1]}')
    lines.append(f'{name}_sum{{{label}="{value}"}} 0')
    return "\n".join(lines)


def _engine(commands: int, acks: tuple[int, ...], epoch: int, backlog: int = 0) -> str:
    return "\n".join([
        "# TYPE shardex_commands_received counter",
        f'shardex_commands_received_total{{shard="0"}} {commands}',
        "# TYPE shardex_shard_backlog gauge", f'shardex_shard_backlog{{shard="0"}} {backlog}',
        "# TYPE shardex_shard_up gauge", 'shardex_shard_up{shard="0"} 1',
        "# TYPE shardex_replica_epoch gauge", f'shardex_replica_epoch{{shard="0"}} {epoch}',
        _hist("shardex_router_ack_seconds", "shard", "0", acks),
        "# TYPE shardex_bridge_lag_events gauge", 'shardex_bridge_lag_events{shard="0"} 7',
        'shardex_bridge_lag_events{shard="a0"} 2',
    ]) + "\n"  # fmt: skip


def test_quantile_is_histogram_quantile() -> None:
    b = [(0.001, 0.0), (0.0025, 50.0), (0.005, 90.0), (0.01, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, b) == 0.0025  # the rank lands on a bucket's top
    assert abs(quantile(0.99, b) - (0.005 + 0.005 * 0.9)) < 1e-12  # linear inside (5, 10] ms
    assert abs(quantile(0.25, b) - (0.001 + 0.0015 * 0.5)) < 1e-12
    assert quantile(0.5, [(0.001, 1.0), (float("inf"), 10.0)]) == 0.001  # in +Inf: top bound
    assert quantile(0.5, [(0.001, 0.0), (float("inf"), 0.0)]) is None and quantile(0.5, []) is None


def test_the_view_takes_percentiles_and_rates_over_the_window_and_counts_failovers() -> None:
    v = OpsView(window=10)
    v.add(Snapshot(100.0, parse(_engine(1000, (0, 100, 100, 100, 100), epoch=3))))
    first = v.view()["shards"][0]
    # one snapshot: no rate yet, the percentiles since the exporter started (all 100 acks in
    # the (1, 2.5] ms bucket: the median halfway through it)
    assert first["commands_per_s"] is None and first["p50_ms"] == 1.75
    # in the window: 100 more acks, 50 of them ≤ 2.5 ms, 40 in (2.5, 5], 10 in (5, 10]
    v.add(Snapshot(102.0, parse(_engine(1400, (0, 150, 190, 200, 200), epoch=4, backlog=3))))
    got = v.view()
    s = got["shards"][0]
    assert got["window_s"] == 2.0 and s["commands_per_s"] == 200.0
    assert s["p50_ms"] == 2.5 and s["p99_ms"] == 9.5  # 5 + 5 × (99 − 90) / 10
    assert (s["backlog"], s["bridge_lag"], s["epoch"], s["failovers"]) == (3, 7, 4, 1)
    assert got["totals"]["failovers"] == 1 and got["totals"]["bridge_lag"] == 9
    # a restarted exporter (counters back near 0): its new counts, never a negative rate
    v.add(Snapshot(104.0, parse(_engine(40, (0, 10, 10, 10, 10), epoch=4))))
    s = v.view()["shards"][0]
    assert s["commands_per_s"] == 10.0 and s["p99_ms"] == 2.485  # 40 over the 4 s window
    for t in (110.0, 116.0):  # older snapshots leave the window
        v.add(Snapshot(t, parse(_engine(40, (0, 10, 10, 10, 10), epoch=4))))
    assert v.view()["window_s"] <= 12.0 and v.view()["shards"][0]["p50_ms"] is None  # idle


KEYS = {k.key_id: k for k in (ApiKey("kr", b"sr", "reader"), ApiKey("ka", b"sa", "admin"),
                               ApiKey("kt", b"st", "trader", frozenset({"t"})))}  # fmt: skip


def _signed(key_id: str, path: str = "/v1/ops") -> dict[str, str]:
    ts = str(int(time.time() * 1000) + len(_signed.__dict__.setdefault("n", [])))
    _signed.__dict__["n"].append(1)  # (a signature is accepted once: a new ts each)
    mac = hmac.new(KEYS[key_id].secret, f"{ts}GET{path}".encode(), hashlib.sha256)
    return {"X-SHARDEX-KEY": key_id, "X-SHARDEX-TIMESTAMP": ts,
            "X-SHARDEX-SIGNATURE": mac.hexdigest()}  # fmt: skip


def test_v1_ops_is_for_admin_and_reader_keys_and_scrapes_once_a_second() -> None:
    fetched: list[str] = []
    texts = {"router 0": _engine(10, (0, 1, 1, 1, 1), 1), "engine 0": _engine(10, (0,) * 5, 1)}

    async def find() -> list[Target]:
        return [Target("router 0", "router 0"), Target("engine 0", "engine 0"),
                Target("engine 0 replica 1", "nobody", optional=True),
                Target("bridge", "bridge")]  # fmt: skip

    async def fetch(url: str) -> str:
        fetched.append(url)
        if url not in texts:
            raise OSError("connection refused")
        return texts[url]

    class Clock:
        now = 50.0

        def __call__(self) -> float:
            return self.now

    async def main() -> None:
        clock = Clock()
        rest = Rest("tcp://127.0.0.1:1", None, {})
        rest.auth.records = {k: ApiKeyRecord(v, "/dev/null") for k, v in KEYS.items()}
        rest.auth.verifier.keys = dict(KEYS)
        app = web.Application()
        Ops(OpsScraper(find, fetch, clock=clock), rest.auth).install(app)
        async with TestClient(TestServer(app)) as client:
            assert (await client.get("/v1/ops")).status == 401
            r = await client.get("/v1/ops", headers=_signed("kt"))
            assert (r.status, (await r.json())["code"]) == (403, OPERATOR_REQUIRED)
            bad = {**_signed("kr"), "X-SHARDEX-SIGNATURE": "00" * 32}
            r = await client.get("/v1/ops", headers=bad)
            assert (r.status, (await r.json())["code"]) == (401, UNAUTHORIZED)
            assert fetched == []  # nothing scraped for a refused request
            for key in ("kr", "ka"):
                r = await client.get("/v1/ops", headers=_signed(key))
                assert r.status == 200
            assert len(fetched) == 4  # the second viewer within the second: the same scrape
            body = await r.json()
            assert [s["shard"] for s in body["shards"]] == ["0"]
            assert body["sources"] == [
                {"name": "router 0", "ok": True, "error": None},
                {"name": "engine 0", "ok": True, "error": None},
                {"name": "bridge", "ok": False, "error": "OSError: connection refused"},
            ]  # (replica 1 absent: not a failure, not listed)
            clock.now += 1.0
            await client.get("/v1/ops", headers=_signed("kr"))
            assert len(fetched) == 8

    asyncio.run(main())


def test_the_targets_of_a_layout_and_the_metrics_before_any_client() -> None:
    lay = Layout("127.0.0.1", 20000, 2, 1, 1)
    names = [t.name for t in targets(lay, 2, 1)]
    assert names == ["router 0", "engine 0", "engine 0 replica 1", "engine 1",
                     "engine 1 replica 1", "account 0", "account 0 replica 1", "bridge"]
    assert targets(lay, 2, 1)[1].url == f"http://127.0.0.1:{lay.shard_metrics_port(0)}/metrics"
    text = generate_latest().decode()
    for line in ('shardex_gateway_frames_total{channel="book"} 0.0',
                 'shardex_gateway_resyncs_total{channel="book",why="slow"} 0.0',
                 'shardex_gateway_subscriptions{channel="user"} 0.0',
                 "shardex_gateway_frames_dropped_total 0.0"):  # fmt: skip
        assert line in text or line.replace(" 0.0", " ") in text, line
    box = Outbox(limit=2)
    box.offer("a", 0.0)
    box.offer("b", 0.0)
    assert box.offer("c", 0.0) == BEHIND and box.take_dropped() == 2 and box.take_dropped() == 0


def test_the_operator_page_is_served_and_linked_from_the_trading_page() -> None:
    async def main() -> None:
        app = web.Application()
        Page(None, {}).install(app)  # type: ignore[arg-type]
        async with TestClient(TestServer(app)) as client:
            page = await client.get("/ops")
            assert page.status == 200 and '<script src="/web/ops.js"' in await page.text()
            assert "script-src 'self'" in page.headers["Content-Security-Policy"]
            js = await client.get("/web/ops.js")
            assert js.status == 200 and "/v1/ops" in await js.text()
            assert 'href="/ops"' in await (await client.get("/")).text()

    asyncio.run(main())

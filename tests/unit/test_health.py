"""``GET /healthz`` (``shardex.health``): one verdict per state of each process kind, answered
through the exporter's WSGI app (no socket: the app is called as the server would)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any
from wsgiref.util import setup_testing_defaults

from shardex.clock import VIRTUAL_EPOCH, VirtualClock
from shardex.health import (
    STARTING,
    Health,
    Verdict,
    app,
    gauge_probe,
    router_probe,
    serving,
    standby_probe,
)
from shardex.node.router_core import Router, RouterConfig
from shardex.wire.link import encode_hello


def _get(health: Health, path: str = "/healthz") -> tuple[str, dict[str, str], bytes]:
    """What the exporter answers a GET of ``path`` (``/metrics``: a stand-in app)."""
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    got: dict[str, Any] = {}

    def metrics(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"# metrics\n"]

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        got.update(status=status, headers=dict(headers))

    body = b"".join(app(health, metrics)(environ, start_response))
    return got["status"], got["headers"], body


def _health(role: str, probe: Any) -> Health:
    h = Health(VirtualClock())  # (its wall clock starts at VIRTUAL_EPOCH)
    h.set(role, probe)
    return h


def test_a_process_that_has_not_started_serving_answers_503_starting():
    status, headers, body = _get(_health("engine", lambda: STARTING))
    assert status.startswith("503")
    assert headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert doc["status"] == "unavailable" and doc["state"] == "starting"
    assert doc["role"] == "engine" and "recovering" in doc["reason"]


def test_a_serving_process_answers_200_and_metrics_stay_on_their_path():
    h = _health("history", serving)
    status, _, body = _get(h)
    assert status.startswith("200")
    assert json.loads(body)["state"] == "serving"
    status, _, body = _get(h, "/metrics")
    assert status.startswith("200") and body == b"# metrics\n"


def test_a_probe_that_raises_is_a_503_not_a_traceback():
    def broken() -> Verdict:
        raise RuntimeError("lost its node")

    status, _, body = _get(_health("router", broken))
    assert status.startswith("503")
    doc = json.loads(body)
    assert doc["state"] == "probe_failed" and "lost its node" in doc["reason"]


def _hello(router: Router, shard: int, tier: str | None = None, shards: int = 2) -> None:
    info: dict[str, Any] = {"shard": shard, "shards": shards, "pid": 100 + shard}
    sender = f"shard-{shard}".encode()
    if tier:
        info["tier"] = tier
        sender = f"accounts-{shard}".encode()
    router.hello(sender, encode_hello(info), router.clock.perf_counter())


def test_a_router_serves_only_once_every_engine_and_account_shard_said_hello():
    clock = VirtualClock(start=100.0)
    router = Router(2, RouterConfig(2, "", "", accounts=1), clock=clock)
    h = _health("router", router_probe(router))
    status, _, body = _get(h)
    doc = json.loads(body)
    assert status.startswith("503") and doc["state"] == "no_shards"
    assert doc["missing"] == ["shard 0", "shard 1", "account shard 0"]
    _hello(router, 0)
    _hello(router, 1)
    status, _, body = _get(h)
    assert status.startswith("503") and json.loads(body)["missing"] == ["account shard 0"]
    _hello(router, 0, tier="accounts", shards=1)
    status, _, body = _get(h)
    assert status.startswith("200"), body
    assert json.loads(body)["shards"] == 2


def test_a_router_whose_shard_fell_silent_is_unavailable_again():
    clock = VirtualClock(start=5.0)
    router = Router(1, RouterConfig(1, "", ""), clock=clock)
    h = _health("router", router_probe(router))
    _hello(router, 0, shards=1)
    assert _get(h)[0].startswith("200")
    clock.advance(3.5)  # no heartbeat hello for longer than shardex_router_shard_up allows
    status, _, body = _get(h)
    assert status.startswith("503") and json.loads(body)["missing"] == ["shard 0"]


def test_a_standby_serves_and_says_whom_it_follows():
    standby = SimpleNamespace(leader=None)
    h = _health("engine", standby_probe(standby))
    status, _, body = _get(h)
    assert status.startswith("200")
    assert json.loads(body) | {"pid": 0} == {"status": "ok", "role": "engine", "pid": 0,
                                            "state": "standby", "following": None,
                                            "time_ms": int(VIRTUAL_EPOCH * 1000)}  # fmt: skip
    standby.leader = SimpleNamespace(node="shard-0.r1")
    assert json.loads(_get(h)[2])["following"] == "shard-0.r1"


def test_the_bridge_is_unavailable_until_its_last_redis_call_succeeded():
    value: list[float | None] = [None]  # not registered yet, then 0, then 1, then 0 again
    h = _health("bridge", gauge_probe(lambda: value[0], "redis_down", "last Redis call failed"))
    for reading, code in ((None, "503"), (0.0, "503"), (1.0, "200"), (0.0, "503")):
        value[0] = reading
        status, _, body = _get(h)
        assert status.startswith(code), (reading, body)
        if code == "503":
            assert json.loads(body)["state"] == "redis_down"


def test_head_gets_the_status_without_a_body():
    environ: dict[str, Any] = {"PATH_INFO": "/healthz", "REQUEST_METHOD": "HEAD"}
    setup_testing_defaults(environ)
    seen: list[str] = []
    out = app(_health("mm", serving), lambda e, s: [])(environ, lambda st, hd: seen.append(st))
    assert seen[0].startswith("200") and b"".join(out) == b""


def test_the_liveness_probe_passes_while_the_process_answers_whatever_its_verdict():
    environ: dict[str, Any] = {"PATH_INFO": "/healthz", "REQUEST_METHOD": "GET",
                               "QUERY_STRING": "live=1"}  # fmt: skip
    setup_testing_defaults(environ)
    seen: list[str] = []
    h = _health("router", lambda: Verdict(False, "no_shards", "no hello from shard 0"))
    body = b"".join(app(h, lambda e, s: [])(environ, lambda st, hd: seen.append(st)))
    assert seen[0].startswith("200")  # not restarted for its shards' absence
    assert json.loads(body)["state"] == "no_shards"  # the verdict still said
    assert _get(h)[0].startswith("503")  # readiness: not ready

"""``GET /healthz`` next to ``/metrics`` on every process's exporter port.

An orchestrator (a Kubernetes probe, a load balancer, a script) asks one question of a
process: does it serve? ``200`` with a JSON body when it does, ``503`` with the reason when it
does not. What "serves" means is the process kind's: a shard that leads or stands by, a router
that has heard from all its shards, a bridge whose last Redis call succeeded. Each kind gives a
probe (a function returning a ``Verdict``) and swaps it as it changes phase (recovering, standby,
leading); the probes are pure (they read the node's own state and clock, never the time).

The HTTP server is prometheus-client's WSGI server with one more path: it is bound once per
process (``start``), as early as the process knows its port, so a shard replaying a long journal
answers ``503 starting`` instead of refusing the connection, and a standby that takes the lease
keeps the same server (the leader's ``shardex.metrics.serve`` finds it bound).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import make_server

from prometheus_client import REGISTRY, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from shardex.clock import REAL, Clock

PATH = "/healthz"
HELLO_FRESH_S = 3.0  # a slot whose last hello is older is down (as shardex_router_shard_up)


@dataclass(frozen=True)
class Verdict:
    """One answer of a probe: ``ok`` (200) or not (503), the ``state`` it is in (a stable
    word: starting, serving, standby, no_shards, redis_down, ...), why when not ok, and any
    detail worth showing (JSON-able)."""

    ok: bool
    state: str
    reason: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)


Probe = Callable[[], Verdict]

STARTING = Verdict(False, "starting", "not serving yet (recovering its journal or starting)")


def serving() -> Verdict:
    """The probe of a process that serves once it runs (history writer, market maker,
    candles worker, a leading shard): it answers, so it serves."""
    return Verdict(True, "serving")


class Health:
    """The process's current probe; ``set`` swaps it as the process changes phase. Read from
    the HTTP server's threads: the probe is one reference, replaced whole."""

    def __init__(self, clock: Clock = REAL) -> None:
        self.role = ""
        self.probe: Probe = lambda: STARTING
        self.clock = clock  # (its wall clock goes in every answer: ``shardex.hoststatus``)

    def set(self, role: str, probe: Probe) -> None:
        self.role, self.probe = role, probe

    def verdict(self) -> Verdict:
        """The probe's verdict; a probe that raises is a 503 (never a 500 with a traceback)."""
        try:
            return self.probe()
        except Exception as exc:  # noqa: BLE001 - any failure of a probe means "not healthy"
            return Verdict(False, "probe_failed", f"{type(exc).__name__}: {exc}")

    def answer(self, live: bool = False) -> tuple[int, bytes]:
        """The HTTP status and JSON body of ``GET /healthz``; ``live`` (``?live=1``, the
        liveness probe): 200 whatever the verdict, as long as the process answers (a router
        whose shards are away must not be restarted for it), the verdict in the body."""
        v = self.verdict()
        body: dict[str, Any] = {"status": "ok" if v.ok else "unavailable", "role": self.role,
                                "state": v.state, "pid": os.getpid(),
                                "time_ms": int(self.clock.time() * 1000)}  # fmt: skip
        if v.reason:
            body["reason"] = v.reason
        body.update(v.detail)
        return (200 if v.ok or live else 503), json.dumps(body, sort_keys=True).encode()


HEALTH = Health()  # the process's (as prometheus's REGISTRY is): one exporter per process

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def app(health: Health, metrics: WSGIApp) -> WSGIApp:
    """``/healthz`` answered by ``health`` (GET or HEAD; ``?live=1``: see ``Health.answer``),
    every other path by ``metrics``."""

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH:
            return metrics(environ, start_response)
        live = "live" in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        code, body = health.answer(live)
        phrase = "200 OK" if code == 200 else "503 Service Unavailable"
        start_response(phrase, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(body))),
                                ("Cache-Control", "no-store")])  # fmt: skip
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    return wsgi


class _Server6(ThreadingWSGIServer):
    address_family = socket.AF_INET6


_bound: dict[int, Any] = {}  # port → server bound by this process
_lock = threading.Lock()


def start(port: int | None, addr: str | None = None) -> bool:
    """Serve ``/healthz`` and ``/metrics`` on ``port`` (falsy: not at all) from a daemon
    thread, once per process: a second call for the same port is a no-op. ``addr``: default
    ``SHARDEX_METRICS_HOST`` or 127.0.0.1 (0.0.0.0 in a container, for the kubelet and
    Prometheus). Returns whether this call bound it."""
    if not port:
        return False
    with _lock:
        if port in _bound:
            return False
        host = addr or os.environ.get("SHARDEX_METRICS_HOST", "127.0.0.1")
        server = _Server6 if ":" in host else ThreadingWSGIServer  # (an IPv6 address: "::")
        httpd = make_server(host, port, app(HEALTH, make_wsgi_app(REGISTRY)), server,
                            handler_class=_SilentHandler)  # fmt: skip
        threading.Thread(target=httpd.serve_forever, daemon=True, name="exporter").start()
        _bound[port] = httpd
        return True


def start_early(role: str, port: int | None) -> None:
    """Bind the exporter before a long start (a shard's journal replay, a standby's
    recovery): ``/healthz`` answers ``503 starting`` until the process sets its probe."""
    HEALTH.set(role, lambda: STARTING)
    start(port)


# -- the probes of the process kinds (pure: the node's own state in, a verdict out) ----------


def slots_verdict(last_seen: Mapping[int, float], now: float, shards: int,
                  accounts: int) -> Verdict:  # fmt: skip
    """A router serves when every engine shard (slots ``0..shards-1``) and every account
    shard (the slots after) said hello within ``HELLO_FRESH_S`` of ``now`` (its clock)."""
    missing = [i for i in range(shards + accounts)
               if now - last_seen.get(i, float("-inf")) >= HELLO_FRESH_S]  # fmt: skip
    detail = {"shards": shards, "accounts": accounts}
    if not missing:
        return Verdict(True, "serving", detail=detail)
    names = [f"shard {i}" if i < shards else f"account shard {i - shards}" for i in missing]
    return Verdict(False, "no_shards", f"no hello within {HELLO_FRESH_S:.0f} s from "
                   + ", ".join(names), {**detail, "missing": names})  # fmt: skip


def router_probe(router: Any) -> Probe:
    """The probe of a router (``router_core.Router``: its ``last_seen``, ``shards``,
    ``accounts`` and clock)."""
    return lambda: slots_verdict(dict(router.last_seen), router.clock.perf_counter(),
                                 router.shards, router.accounts)  # fmt: skip


def standby_probe(standby: Any) -> Probe:
    """A hot standby serves its purpose (it follows, ready to take the lease): 200, with the
    leader it follows (None while it has none to follow)."""

    def probe() -> Verdict:
        leader = standby.leader
        return Verdict(
            True, "standby", detail={"following": leader.node if leader is not None else None}
        )

    return probe


def gauge_probe(read: Callable[[], float | None], state: str, reason: str) -> Probe:
    """A probe on a 0/1 gauge (e.g. the bridge's ``shardex_bridge_redis_up``): 200 while it
    reads 1, else 503 ``state`` with ``reason``."""

    def probe() -> Verdict:
        return Verdict(True, "serving") if read() == 1 else Verdict(False, state, reason)

    return probe


def registry_gauge(name: str) -> Callable[[], float | None]:
    """A reader of the process's registered gauge ``name`` (None: not registered)."""
    return lambda: REGISTRY.get_sample_value(name)


def check(port: int, timeout: float = 3.0) -> tuple[int, str]:
    """``GET /healthz`` of the exporter on 127.0.0.1:``port``: (HTTP status, body); status 0
    when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{PATH}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def main() -> int:
    """The image's HEALTHCHECK: 0 when ``SHARDEX_HEALTH_PORT``'s exporter answers 200 (or no
    port is given: nothing to ask), else 1."""
    port = os.environ.get("SHARDEX_HEALTH_PORT")
    if not port:
        return 0
    code, body = check(int(port))
    print(code or "no answer", body)
    return 0 if code == 200 else 1


if __name__ == "__main__":  # pragma: no cover - the image's HEALTHCHECK
    raise SystemExit(main())

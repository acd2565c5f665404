"""``shardex status --hosts FILE``: every process of a cluster spread over several hosts, read
one by one at its own health endpoint, and each host's wall clock compared with ours.

Why a file: across hosts there is no ``shardex up`` whose endpoints file lists every process,
and the router knows only the *leaders* (their HELLOs), not the standbys, the bridge or the
other routers. The file names each process and where its ``/healthz`` answers (the exporter
port, bound on an address other hosts reach: ``SHARDEX_METRICS_HOST``)::

    {"router": "tcp://10.0.0.1:5555",
     "processes": {"router": "http://10.0.0.1:5557/healthz",
                   "engine-0.r0": "http://10.0.0.2:5855/healthz", ...}}

Every ``/healthz`` body carries the process's wall clock (``time_ms``). Our clock read before
and after the request brackets it: the offset is the body's time minus the midpoint, give or
take half the round trip. An offset beyond ``SKEW_WARN_MS`` is flagged: leases do not depend
on wall clocks (``shardex.lease``: the leader's monotonic clock and the store's ttl), but
order expiry times and event timestamps do, and a leader whose clock differs from its
standby's moves every such time at a failover.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardex.clock import REAL, Clock

SKEW_WARN_MS = 250  # a host clock further off than this (beyond the round trip) is flagged


@dataclass(frozen=True)
class Topology:
    """What ``--hosts FILE`` says: the router clients talk to, and each process's health URL."""

    router: str | None
    processes: dict[str, str]


def load(path: str | Path) -> Topology:
    """Read and check a hosts file; a bad one is a ``ValueError`` naming the file and why."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the hosts file ({exc})") from None
    procs = raw.get("processes") if isinstance(raw, dict) else None
    if not isinstance(procs, dict) or not procs:
        raise ValueError(f'{path}: give "processes": {{name: health URL, ...}}')
    bad = [n for n, u in procs.items() if not (isinstance(u, str) and u.startswith("http://"))]
    if bad:
        raise ValueError(f"{path}: not an http:// health URL: {', '.join(map(str, bad))}")
    router = raw.get("router")
    if router is not None and not isinstance(router, str):
        raise ValueError(f'{path}: "router" must be an endpoint string')
    return Topology(router, {str(n): u for n, u in procs.items()})


@dataclass(frozen=True)
class Row:
    """One process as its health endpoint answered (``code`` 0: no answer)."""

    name: str
    url: str
    code: int
    body: dict[str, Any]
    offset_ms: float | None  # its wall clock minus ours (None: unknown)
    rtt_ms: float

    @property
    def skewed(self) -> bool:
        """Its clock is off by more than ``SKEW_WARN_MS`` beyond what the round trip hides."""
        return self.offset_ms is not None and abs(self.offset_ms) - self.rtt_ms / 2 > SKEW_WARN_MS


def judge(name: str, url: str, code: int, body: dict[str, Any], t0: float, t1: float) -> Row:
    """A row from an answer and our wall clock before (``t0``) and after (``t1``) it (s)."""
    theirs = body.get("time_ms")
    offset = None if not isinstance(theirs, int | float) else theirs - (t0 + t1) / 2 * 1000
    return Row(name, url, code, body, offset, (t1 - t0) * 1000)


Fetch = Callable[[str, float], tuple[int, bytes]]


def fetch(url: str, timeout: float) -> tuple[int, bytes]:
    """GET ``url``: (HTTP status, body); a 503 is an answer too (its body says why)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - http only
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def ask(topo: Topology, timeout: float, get: Fetch | None = None, clock: Clock = REAL
        ) -> list[Row]:  # fmt: skip
    """Every process of ``topo``, one after another (a dead host costs ``timeout``);
    ``get``: how to ask (default ``fetch``, looked up at the call)."""
    get = get or fetch
    rows = []
    for name, url in topo.processes.items():
        t0 = clock.time()
        try:
            code, raw = get(url, timeout)
            body = json.loads(raw or b"{}")
        except (OSError, ValueError) as exc:
            code, body = 0, {"reason": f"no answer: {exc}"}
        rows.append(judge(name, url, code, body if isinstance(body, dict) else {}, t0,
                          clock.time()))  # fmt: skip
    return rows


def lines(rows: list[Row]) -> list[str]:
    """The table ``shardex status --hosts`` prints before the cluster's own view."""
    out = [f"{'process':<16} {'where':<22} {'http':>4} {'state':<10} {'pid':>7} "
           f"{'clock':>9} detail"]  # fmt: skip
    for r in rows:
        where = r.url.split("//", 1)[-1].split("/", 1)[0]
        clock = "-" if r.offset_ms is None else f"{r.offset_ms:+.0f}ms"
        detail = r.body.get("reason") or (f"following {r.body['following']}"
                                          if r.body.get("following") else "")  # fmt: skip
        if r.skewed:
            detail = f"CLOCK OFF by {r.offset_ms:+.0f} ms (> {SKEW_WARN_MS} ms) {detail}"
        out.append(f"{r.name:<16} {where:<22} {r.code or '-':>4} "
                   f"{r.body.get('state', 'down'):<10} {r.body.get('pid', '-'):>7} "
                   f"{clock:>9} {detail}".rstrip())  # fmt: skip
    return out


def as_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [{"name": r.name, "url": r.url, "http": r.code, **r.body,
             "clock_offset_ms": None if r.offset_ms is None else round(r.offset_ms, 1),
             "rtt_ms": round(r.rtt_ms, 1), "clock_skewed": r.skewed} for r in rows]  # fmt: skip

"""``GET /v1/ops``: the operator page's numbers, read by the gateway from the cluster's own
Prometheus exporters (their ports from the layout, the shard counts from the router's
topology) and summed up by ``opsview`` -- live latency, throughput, backlog, bridge lag and
failovers without a Prometheus or a Grafana.

Who may see them: a session or a signed request of an **admin or reader** API key (a trader
key gets ``operator_required``, 148). Not public, because the numbers describe the venue's
insides (how busy each shard is, when it failed over), and because each read fans out to
every exporter: the gateway scrapes at most once per ``EVERY`` seconds whoever asks (viewers
share the answer), and only a key holder can ask. A gateway of a cluster without keys
(``--insecure``: every door is open there) serves them to anyone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from shardex.aio import within
from shardex.gateway import metrics as m
from shardex.gateway.opsview import OpsView, Samples, Snapshot, parse
from shardex.gateway.rest_common import Refusal, refuse, reply
from shardex.layout import Layout
from shardex.wire.codes import OPERATOR_REQUIRED

log = logging.getLogger("shardex.gateway")
EVERY = 1.0  # seconds between two scrapes of the cluster, however many viewers
TIMEOUT = 2.0  # seconds an exporter may take to answer
OPS_ROLES = frozenset({"admin", "reader"})


@dataclass(frozen=True)
class Target:
    """One exporter: its name on the page and its ``/metrics`` URL; ``optional``: absent
    is normal (replica 1 of a shard that is not replicated)."""

    name: str
    url: str
    optional: bool = False


def targets(layout: Layout, shards: int, accounts: int) -> list[Target]:
    """The exporters of a ``shardex up`` layout with ``shards`` engine and ``accounts``
    account shards: routers, both replicas of each shard (only the leader exports its
    shard's series), the bridge."""
    url = f"http://{layout.host}:{{}}/metrics".format
    out = [Target(f"router {j}", url(layout.router_metrics(j))) for j in range(layout.routers)]
    for i in range(shards):
        out += [Target(f"engine {i}", url(layout.shard_metrics_port(i))),
                Target(f"engine {i} replica 1", url(layout.replica_metrics(i, 1)), True)]
    for j in range(accounts):
        out += [Target(f"account {j}", url(layout.account_metrics_port(j))),
                Target(f"account {j} replica 1", url(layout.account_replica_metrics(j, 1)), True)]
    out.append(Target("bridge", url(layout.bridge_metrics_port)))
    return out


class OpsScraper:
    """Scrapes the targets (at most once per ``every`` s; concurrent askers share one scrape)
    into an ``OpsView``. ``find``: the current targets; ``fetch``: a URL's text."""

    def __init__(self, find: Callable[[], Awaitable[list[Target]]],
                 fetch: Callable[[str], Awaitable[str]],
                 clock: Callable[[], float] = time.monotonic,
                 every: float = EVERY) -> None:  # fmt: skip
        self.find, self.fetch, self.clock, self.every = find, fetch, clock, every
        self.view = OpsView()
        self.last: dict[str, Any] | None = None
        self.at = float("-inf")
        self.lock = asyncio.Lock()

    async def current(self) -> dict[str, Any]:
        """The numbers, scraped again if the last scrape is older than ``every``."""
        async with self.lock:
            if self.last is None or self.clock() - self.at >= self.every:
                self.last = await self._scrape()
                self.at = self.clock()
            return self.last

    async def _scrape(self) -> dict[str, Any]:
        try:
            found = await self.find()
        except Exception as exc:  # noqa: BLE001 - the router away: said on the page
            m.OPS_SCRAPES.labels("failed").inc()
            return {**self.view.view(), "error": f"the cluster's topology: {exc}"[:200]}
        got = await asyncio.gather(*(self._one(t) for t in found))
        merged: Samples = {}
        sources = []
        for t, (samples, err) in zip(found, got, strict=True):
            if samples is not None:
                for k, v in samples.items():  # (two routers' series add up)
                    merged[k] = merged.get(k, 0.0) + v
            if samples is not None or not t.optional:
                sources.append({"name": t.name, "ok": samples is not None, "error": err})
        self.view.add(Snapshot(self.clock(), merged))
        return self.view.view(sources)

    async def _one(self, t: Target) -> tuple[Samples | None, str | None]:
        try:
            samples = parse(await within(self.fetch(t.url), TIMEOUT))
        except (OSError, TimeoutError, ValueError, aiohttp.ClientError) as exc:
            m.OPS_SCRAPES.labels("failed").inc()
            return None, f"{type(exc).__name__}: {exc}"[:160]
        m.OPS_SCRAPES.labels("ok").inc()
        return samples, None


class Fetcher:
    """An exporter's ``/metrics`` text over HTTP (one client session, made on first use)."""

    def __init__(self) -> None:
        self.http: aiohttp.ClientSession | None = None

    async def __call__(self, url: str) -> str:
        if self.http is None:
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT))
        async with self.http.get(url) as resp:
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status}")
            return await resp.text()

    async def close(self, app: web.Application | None = None) -> None:  # noqa: ARG002
        if self.http is not None:
            await self.http.close()
            self.http = None


class Ops:
    """The ``/v1/ops`` route around an ``OpsScraper``; ``auth``: the REST API's (a session's
    key or a signature), None on a cluster without keys (open); ``fetcher`` closed with the
    app."""

    def __init__(self, scraper: OpsScraper, auth: Any, fetcher: Fetcher | None = None) -> None:
        self.scraper, self.auth, self.fetcher = scraper, auth, fetcher

    def install(self, app: web.Application) -> None:
        app.router.add_get("/v1/ops", self.numbers)
        if self.fetcher is not None:
            app.on_cleanup.append(self.fetcher.close)

    async def numbers(self, request: web.Request) -> web.Response:
        if self.auth is not None:
            try:
                rec, _ = await self.auth.check(request)
            except Refusal as exc:
                return exc.response()
            if rec.key.role not in OPS_ROLES:
                return refuse(OPERATOR_REQUIRED, "the operator numbers are for admin and "
                              "reader API keys", 403)  # fmt: skip
        return reply(await self.scraper.current())

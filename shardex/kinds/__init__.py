"""Every process kind of a cluster, each described once (``shardex.kinds.spec.Kind``).

From ``KINDS`` come the options of ``shardex router|engine|accounts|bridge|candles-worker|
gateway|redis``, the children (and their argv) ``shardex up`` starts, the Procfile and .env, the
ports ``shardex up`` checks are free and the Prometheus scrape jobs (``shardex up
--prometheus-config``).
Adding a process kind = one module here (its ``Kind``) + its service + its command.
"""

from __future__ import annotations

from shardex.kinds.accounts import ACCOUNTS
from shardex.kinds.bridge import BRIDGE
from shardex.kinds.candles import CANDLES
from shardex.kinds.engine import ENGINE
from shardex.kinds.feed import FEED
from shardex.kinds.gateway import GATEWAY
from shardex.kinds.history import HISTORY
from shardex.kinds.mm import MM
from shardex.kinds.redis import REDIS
from shardex.kinds.router import ROUTER
from shardex.kinds.spec import Kind, Opt, Plan, Spawn

# in start order: what a process connects to starts before it (it would retry anyway);
# the feed and the market maker last: clients of all the rest
KINDS: tuple[Kind, ...] = (REDIS, ROUTER, ENGINE, ACCOUNTS, BRIDGE, CANDLES, HISTORY, GATEWAY,
                          FEED, MM)  # fmt: skip
BY_NAME = {kind.name: kind for kind in KINDS}


# the kinds ``shardex up --without`` may leave out: consumers of the streams that nothing else in
# the cluster waits for (a lab, a test or a box that keeps candles or history elsewhere), and
# the price feed (a test that sends index prices itself; another feed run elsewhere)
OPTIONAL = ("candles-worker", "history-writer", "feed")


def spawns(plan: Plan) -> list[tuple[Kind, Spawn]]:
    """Every child of the cluster ``plan`` describes, in start order, with its kind."""
    return [(kind, spawn) for kind in KINDS if kind.name not in plan.without
            for spawn in kind.children(plan)]  # fmt: skip


def cluster_ports(plan: Plan) -> list[int]:
    """Every TCP port the children of ``plan`` bind (checked free before starting)."""
    return [port for kind in KINDS if kind.name not in plan.without for port in kind.ports(plan)]


__all__ = ["ACCOUNTS", "BRIDGE", "BY_NAME", "CANDLES", "ENGINE", "FEED", "GATEWAY", "HISTORY",
           "KINDS", "MM", "OPTIONAL", "REDIS", "ROUTER", "Kind", "Opt", "Plan", "Spawn",
           "cluster_ports", "spawns"]  # fmt: skip

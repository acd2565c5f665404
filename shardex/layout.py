"""Default endpoint layout of a cluster started by ``shardex up`` (one base port, fixed offsets).

Every endpoint is a plain ZeroMQ address, so a multi-host deployment just passes explicit
``--router``/``--direct``/``--pub`` addresses to each process instead of using this layout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from shardex.wire.protocol import shard_for

DEFAULT_BASE_PORT = 5555
MAX_SHARDS = 100  # the layout reserves 100 ports per kind of per-shard endpoint
REPLICA_BASE = 1100  # --replicas 2: base+1100.. (repl, replica 1's direct/pub/metrics/link)
LINK_REPLICAS = "+"  # in an account shard's --engine-links: one engine shard's replicas
MM_METRICS_OFFSET = 9  # base+9: the market maker's exporter (``shardex up --mm``)
MAX_ROUTERS = 16  # router j >= 1 uses base+10+j (clients), base+40+j (shards), base+70+j (metrics)
GATEWAY_OFFSET = 86  # gateway g serves HTTP + WebSocket (and /metrics) on base+86+g
MAX_GATEWAYS = 10  # base+86..95


@dataclass(frozen=True)
class Layout:
    host: str = "127.0.0.1"
    base_port: int = DEFAULT_BASE_PORT
    shards: int = 1
    routers: int = 1
    accounts: int = 0  # account shards; 0: the account tier is off
    gateways: int = 1  # gateway processes (``shardex gateway``: they run with Redis)

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= MAX_SHARDS:
            raise ValueError(f"shards must be 1..{MAX_SHARDS}, got {self.shards}")
        if not 1 <= self.routers <= MAX_ROUTERS:
            raise ValueError(f"routers must be 1..{MAX_ROUTERS}, got {self.routers}")
        if not 1024 <= self.base_port <= 65535 - 400:
            raise ValueError(f"base port must be 1024..{65535 - 400}, got {self.base_port}")
        if not 0 <= self.accounts <= MAX_SHARDS:
            raise ValueError(f"accounts must be 0..{MAX_SHARDS}, got {self.accounts}")
        if not 0 <= self.gateways <= MAX_GATEWAYS:
            raise ValueError(f"gateways must be 0..{MAX_GATEWAYS}, got {self.gateways}")
        if self.accounts and self.base_port > 65535 - 800:
            raise ValueError(f"with accounts the base port must be <= {65535 - 800}")

    def _ep(self, port: int) -> str:
        return f"tcp://{self.host}:{port}"

    @property
    def frontend(self) -> str:
        return self.router_frontend(0)

    @property
    def backend(self) -> str:
        return self.router_backend(0)

    @property
    def router_metrics_port(self) -> int:
        return self.router_metrics(0)

    # Router j of R (router 0 keeps the historic base+0/1/2, so one-router setups never change).
    def router_frontend(self, j: int) -> str:
        return self._ep(self.base_port + (10 + j if j else 0))

    def router_backend(self, j: int) -> str:
        return self._ep(self.base_port + (40 + j if j else 1))

    def router_metrics(self, j: int) -> int:
        return self.base_port + (70 + j if j else 2)

    @property
    def frontends(self) -> str:
        """Every router's client endpoint, comma-separated (what clients take)."""
        return ",".join(self.router_frontend(j) for j in range(self.routers))

    @property
    def backends(self) -> str:
        """Every router's shard endpoint, comma-separated (what each shard connects to)."""
        return ",".join(self.router_backend(j) for j in range(self.routers))

    @property
    def bridge_metrics_port(self) -> int:
        return self.base_port + 3

    @property
    def candles_metrics_port(self) -> int:
        return self.base_port + 5

    @property
    def history_metrics_port(self) -> int:
        """The history writer's exporter (it runs with the account tier: ``kinds.history``)."""
        return self.base_port + 7

    def gateway_port(self, g: int) -> int:
        """Gateway ``g``'s HTTP + WebSocket port (its ``/metrics`` too)."""
        return self.base_port + GATEWAY_OFFSET + g

    @property
    def gateway_ports(self) -> list[int]:
        return [self.gateway_port(g) for g in range(self.gateways)]

    @property
    def redis_port(self) -> int:
        return self.base_port + 4

    @property
    def mm_metrics_port(self) -> int:
        """The market maker's exporter (``shardex up --mm`` only: not in ``ports``)."""
        return self.base_port + MM_METRICS_OFFSET

    @property
    def redis_url(self) -> str:
        return f"redis://{self.host}:{self.redis_port}/0"

    def direct(self, i: int) -> str:
        return self._ep(self.base_port + 100 + i)

    def pub(self, i: int) -> str:
        return self._ep(self.base_port + 200 + i)

    def shard_metrics_port(self, i: int) -> int:
        return self.base_port + 300 + i

    def account_link(self, i: int) -> str:
        """Engine shard i's endpoint for the account shards' links (accounts on only)."""
        return self._ep(self.base_port + 400 + i)

    @property
    def account_links(self) -> str:
        return ",".join(self.account_link(i) for i in range(self.shards))

    def account_metrics_port(self, j: int) -> int:
        return self.base_port + 500 + j

    def account_pub(self, j: int) -> str:
        """Account shard j's event PUB (balance changes for the bridge)."""
        return self._ep(self.base_port + 600 + j)

    def account_direct(self, j: int) -> str:
        """Account shard j's direct port (the bridge's status polls and range repairs)."""
        return self._ep(self.base_port + 700 + j)

    # Replicated shards (``--replicas 2``): replica 0 keeps the classic direct/pub/
    # metrics ports; replica 1 gets its own (both run on one box here); each replica binds a
    # replication endpoint its standby connects to. (base+1100.. : base+400..799 belong to the
    # account tier.)
    def repl(self, i: int, r: int) -> str:
        """Replica ``r`` (0 or 1) of shard ``i``: where it ships batches when it leads."""
        return self._ep(self.base_port + REPLICA_BASE + 100 * self._replica(r) + i)

    def replica_direct(self, i: int, r: int) -> str:
        if not self._replica(r):
            return self.direct(i)
        return self._ep(self.base_port + REPLICA_BASE + 200 + i)

    def replica_pub(self, i: int, r: int) -> str:
        if not self._replica(r):
            return self.pub(i)
        return self._ep(self.base_port + REPLICA_BASE + 300 + i)

    def replica_metrics(self, i: int, r: int) -> int:
        if not self._replica(r):
            return self.shard_metrics_port(i)
        return self.base_port + REPLICA_BASE + 400 + i

    def replica_account_link(self, i: int, r: int) -> str:
        """Replica ``r`` of engine shard ``i``: where it binds the account shards' link when
        it leads (accounts on only). Each replica has its own, so a new leader never needs the
        port a deposed one (paused, not yet exited) may still hold."""
        if not self._replica(r):
            return self.account_link(i)
        return self._ep(self.base_port + REPLICA_BASE + 500 + i)

    @property
    def replica_account_links(self) -> str:
        """``--engine-links`` of an account shard when every engine shard runs as two
        replicas: per engine shard both replicas' link endpoints joined by ``+`` (the account
        shard connects to both; only the leader has bound its endpoint), engine shards
        separated by commas."""
        return ",".join(
            LINK_REPLICAS.join(self.replica_account_link(i, r) for r in (0, 1))
            for i in range(self.shards)
        )

    # Replicated account shards (``--replicas 2`` with the account tier): base+1700.. for the
    # replication endpoints of both replicas, base+1900.. for replica 1's direct/pub/metrics.
    def account_repl(self, j: int, r: int) -> str:
        """Replica ``r`` of account shard ``j``: where it ships batches when it leads."""
        return self._ep(self.base_port + REPLICA_BASE + 600 + 100 * self._replica(r) + j)

    def account_replica_direct(self, j: int, r: int) -> str:
        if not self._replica(r):
            return self.account_direct(j)
        return self._ep(self.base_port + REPLICA_BASE + 800 + j)

    def account_replica_pub(self, j: int, r: int) -> str:
        if not self._replica(r):
            return self.account_pub(j)
        return self._ep(self.base_port + REPLICA_BASE + 900 + j)

    def account_replica_metrics(self, j: int, r: int) -> int:
        if not self._replica(r):
            return self.account_metrics_port(j)
        return self.base_port + REPLICA_BASE + 1000 + j

    def replica_ports(self) -> list[int]:
        """The ports ``--replicas 2`` adds (repl endpoints of both, replica 1's own ports,
        with accounts replica 1's account link and the account shards' replica ports)."""
        base = self.base_port + REPLICA_BASE
        top = 1100 if self.accounts else 500
        if base + top > 65535:
            raise ValueError(
                f"with --replicas 2 the base port must be <= {65535 - REPLICA_BASE - top}"
            )
        out = []
        for i in range(self.shards):
            out += [base + i, base + 100 + i, base + 200 + i, base + 300 + i, base + 400 + i]
            if self.accounts:
                out.append(base + 500 + i)
        for j in range(self.accounts):
            out += [base + 600 + j, base + 700 + j, base + 800 + j, base + 900 + j,
                    base + 1000 + j]  # fmt: skip
        return out

    @staticmethod
    def _replica(r: int) -> int:
        if r not in (0, 1):
            raise ValueError(f"replica must be 0 or 1, got {r}")
        return r

    def ports(self) -> list[int]:
        """Every TCP port this layout uses (to check they are free before starting)."""
        base = self.base_port
        out = [base, base + 1, base + 2, base + 3, base + 4, base + 5]
        for j in range(1, self.routers):
            out += [base + 10 + j, base + 40 + j, base + 70 + j]
        for i in range(self.shards):
            out += [base + 100 + i, base + 200 + i, base + 300 + i]
        out += self.gateway_ports
        if self.accounts:
            out.append(self.history_metrics_port)
            out += [base + 400 + i for i in range(self.shards)]
            out += [base + 500 + j for j in range(self.accounts)]
            out += [base + 600 + j for j in range(self.accounts)]
            out += [base + 700 + j for j in range(self.accounts)]
        return out


def pairs_by_shard(
    symbols: Iterable[str], shards: int, owner: Callable[[str], int] | None = None
) -> list[list[str]]:
    """The pairs each of N engine shards owns (sorted): by ``owner`` (the cluster's placement
    map's), else by the default (``shard_for``: a hash, so with a few markets some shard may
    own none; say so)."""
    out: list[list[str]] = [[] for _ in range(shards)]
    for symbol in sorted(symbols):
        i = owner(symbol) if owner is not None else shard_for(symbol, shards)
        out[i if 0 <= i < shards else 0].append(symbol)
    return out


def idle_shards_warning(symbols: Iterable[str], shards: int) -> str | None:
    """One line naming the engine shards that own no pair of the market table, or None."""
    idle = [i for i, pairs in enumerate(pairs_by_shard(symbols, shards)) if not pairs]
    if not idle:
        return None
    which = ", ".join(map(str, idle))
    return (
        f"WARNING: with {shards} shards, shard(s) {which} own none of the markets (pairs are "
        "spread by a hash of the symbol, not evenly): they will idle; add markets (--markets "
        "FILE) or choose another --shards (shardex status lists the pairs per shard)"
    )

"""Default endpoint layout of a cluster started by ``shardex up`` (one base port, fixed offsets).

Every endpoint is a plain ZeroMQ address, so a multi-host deployment just passes explicit
``--router``/``--direct``/``--pub`` addresses to each process instead of using this layout.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BASE_PORT = 5555
MAX_SHARDS = 100  # the layout reserves 100 ports per kind of per-shard endpoint


@dataclass(frozen=True)
class Layout:
    host: str = "127.0.0.1"
    base_port: int = DEFAULT_BASE_PORT
    shards: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= MAX_SHARDS:
            raise ValueError(f"shards must be 1..{MAX_SHARDS}, got {self.shards}")
        if not 1024 <= self.base_port <= 65535 - 400:
            raise ValueError(f"base port must be 1024..{65535 - 400}, got {self.base_port}")

    def _ep(self, port: int) -> str:
        return f"tcp://{self.host}:{port}"

    @property
    def frontend(self) -> str:
        return self._ep(self.base_port)

    @property
    def backend(self) -> str:
        return self._ep(self.base_port + 1)

    @property
    def router_metrics_port(self) -> int:
        return self.base_port + 2

    @property
    def bridge_metrics_port(self) -> int:
        return self.base_port + 3

    @property
    def redis_port(self) -> int:
        return self.base_port + 4

    @property
    def redis_url(self) -> str:
        return f"redis://{self.host}:{self.redis_port}/0"

    def direct(self, i: int) -> str:
        return self._ep(self.base_port + 100 + i)

    def pub(self, i: int) -> str:
        return self._ep(self.base_port + 200 + i)

    def shard_metrics_port(self, i: int) -> int:
        return self.base_port + 300 + i

    def ports(self) -> list[int]:
        """Every TCP port this layout uses (to check they are free before starting)."""
        base = self.base_port
        out = [base, base + 1, base + 2, base + 3, base + 4]
        for i in range(self.shards):
            out += [base + 100 + i, base + 200 + i, base + 300 + i]
        return out

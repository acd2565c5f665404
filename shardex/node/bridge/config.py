"""The bridge's configuration (what ``shardex bridge`` parses its options into)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shardex.engine import Market

PREFIX = "shardex:"


@dataclass
class BridgeConfig:
    router: str  # router endpoint: the topology (shard PUB and direct endpoints) comes from it
    redis_url: str
    markets: Mapping[str, Market]
    prefix: str = PREFIX
    maxlen: int = 0  # 0: no trimming; else approximate MAXLEN ~ per stream
    batch: int = 2000  # events per script call
    sub_hwm: int = 1_000_000
    max_pending: int = 2_000_000  # per shard; beyond this we drop and repair later
    metrics_port: int | None = None
    poll_interval: float = 0.5
    status_timeout: float = 1.0
    repair_timeout: float = 2.0  # first wait for a repair answer; doubles up to 30 s
    stall_after: float = 5.0  # seconds without progress while the shard is ahead → ALERT
    hole_wait: float = 0.1
    # CURVE key store (``shardex.auth``): the bridge authenticates with its process key to the
    # router and every shard, and takes its Redis password from ``redis.json`` there when the
    # URL names a user without one. None: insecure (lab)
    keys_dir: str | None = None

"""``shardex redis``: the embedded Redis-compatible server the bridge writes to and the
replicas' leases live in, as the Procfile runs it (options: ``shardex.kinds.redis``)."""

from __future__ import annotations

import os
import sys

import click

from shardex.cli.base import checked_layout, process_keys_dir
from shardex.kinds import REDIS
from shardex.kinds.redis import embedded_redis_argv
from shardex.node.supervisor import run_filtered


@click.command("redis")
@REDIS.click_options()
def redis_cmd(
    host: str, base_port: int, data_dir: str | None, keys_dir: str | None, insecure: bool
) -> None:
    """Run the embedded Redis-compatible server on the layout's port (base+4).

    With keys (the default): ACL users ``bridge`` (writes the streams), ``reader`` (reads),
    ``consumer`` (consumer groups) and ``lease``, passwords in KEYS_DIR/redis.json, no
    anonymous access (docs/redis.md). Needs redis-server/valkey-server >= 7.0.
    """
    keys = process_keys_dir("redis", data_dir, keys_dir, insecure)
    data = os.path.abspath(data_dir) if data_dir else None
    sys.exit(run_filtered(embedded_redis_argv(checked_layout(host, base_port), data, keys)))

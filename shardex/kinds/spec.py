"""The shape of a process kind's description: its options (``Opt``) and the kind (``Kind``).

One ``Opt`` is one command-line option declared once: from it come the click option of
``shardex <kind>`` and the argv words ``shardex up`` (``shardex.node.supervisor``) passes a
child, so the two can never disagree on a flag's spelling, type or meaning. One ``Kind`` is
one sort of process ``shardex up`` starts (router, engine shard, account shard, bridge,
Redis): its options, the children a cluster has of it, its Procfile/.env lines, the ports it
binds in the layout and the metrics ports Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import click

from shardex.layout import Layout
from shardex.leasetime import DEFAULT_LEASE_MS
from shardex.redisauth import user_url


@dataclass(frozen=True)
class Opt:
    """One option of a process command: ``flag`` (``--metrics-port``), the parameter
    ``dest`` it fills (default: the flag's name with ``_``), and click's settings."""

    flag: str
    dest: str | None = None
    type: Any = None
    default: Any = None
    help: str | None = None
    envvar: str | None = None
    show_default: bool = False
    is_flag: bool = False
    callback: Callable[..., Any] | None = None
    metavar: str | None = None

    @property
    def name(self) -> str:
        return self.dest or self.flag.lstrip("-").replace("-", "_")

    def decorator(self) -> Callable[[Any], Any]:
        """The click option this declaration stands for."""
        kw: dict[str, Any] = {"default": self.default, "help": self.help}
        for key in ("type", "envvar", "callback", "metavar"):
            if getattr(self, key) is not None:
                kw[key] = getattr(self, key)
        if self.show_default:
            kw["show_default"] = True
        if self.is_flag:
            kw["is_flag"] = True
            kw.pop("default")
        return click.option(self.flag, self.name, **kw)

    def argv(self, value: Any) -> list[str]:
        """The words that make click parse ``value`` back (None: the option is left out)."""
        if value is None:
            return []
        if self.is_flag:
            return [self.flag] if value else []
        return [self.flag, str(value)]


def port_of(endpoint: str) -> int:
    """The port of a ``tcp://HOST:PORT`` endpoint of the layout."""
    return int(endpoint.rsplit(":", 1)[1])


def apply_options(options: Iterable[Opt]) -> Callable[[Any], Any]:
    """A decorator adding ``options`` to a click command, in the order given (as ``--help``
    lists them)."""
    opts = list(options)

    def decorate(f: Any) -> Any:
        for opt in reversed(opts):
            f = opt.decorator()(f)
        return f

    return decorate


@dataclass(frozen=True)
class Plan:
    """What ``shardex up`` decided for a cluster, which every kind turns into its children.

    ``redis``: "embedded" (start one), a URL (use it) or None (no Redis, no bridge);
    ``keys_dir`` None: an ``--insecure`` cluster (said to every child); ``replicas`` 2: every
    engine and account shard runs as two ``--role auto`` processes under a Redis lease."""

    layout: Layout
    markets_file: str | None = None
    max_backlog: int = 10_000
    pin: bool = True
    log_level: str = "INFO"
    data_dir: str | None = None
    fsync: str = "batch"
    redis: str | None = "embedded"
    pub_hwm: int | None = None
    keys_dir: str | None = None
    replicas: int = 1
    durability: str = "both"  # with replicas: when replies leave (``leader.DURABILITY``)
    mm: bool = False  # ``shardex up --mm``: also the market maker (``shardex.kinds.mm``)
    # ``shardex up --without NAME``: optional kinds left out (``shardex.kinds.OPTIONAL``)
    without: frozenset[str] = frozenset()
    # ``shardex up --coord URL``: the replicas' leases in this store (``etcd://h:p,h:p``)
    # instead of the cluster's Redis (``shardex.coord``)
    coord: str | None = None
    lease_ms: int = DEFAULT_LEASE_MS  # with replicas: the leases' ttl (``--lease-ms``)

    @property
    def security(self) -> dict[str, Any]:
        """Every child is told explicitly how it authenticates: never by omission."""
        return {"keys_dir": self.keys_dir} if self.keys_dir else {"insecure": True}

    @property
    def lease_url(self) -> str | None:
        """The Redis of the replicas' leases (the embedded one as user ``lease``, whose
        password the shards read from the keys dir, never from a command line)."""
        if self.replicas < 2:
            return None
        if self.coord:
            return self.coord
        if self.redis is None:
            return None
        if self.redis != "embedded":
            return self.redis
        url = self.layout.redis_url
        return user_url(url, "lease") if self.keys_dir else url

    @property
    def markets(self) -> dict[str, Any]:
        return {"markets_file": self.markets_file} if self.markets_file else {}


@dataclass(frozen=True)
class Spawn:
    """One child of a cluster: its name in the supervisor's log, and either the option values
    of ``shardex <kind>`` (``values``, turned into argv by the kind) or a ready ``argv`` (a
    process that is not a ``shardex`` command, e.g. the embedded Redis server)."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)
    argv: list[str] | None = None
    drop: tuple[bytes, ...] = ()
    # stopped, and waited for, before the others: a client that needs the cluster to finish
    # (the market maker cancels its orders when it stops)
    stop_first: bool = False


def replicated_children(
    name: str, count: int, replicas: int, values: Callable[[int, int | None], dict[str, Any]]
) -> list[Spawn]:
    """``NAME.I`` for each of ``count`` shards (``values(i, None)``: not replicated); with
    replicas, ``NAME.I`` for replica 0 and ``NAME.I.rR`` for the others (``values(i, r)``).
    Engine and account shards name and order their processes this way."""
    if replicas == 1:
        return [Spawn(f"{name}.{i}", values(i, None)) for i in range(count)]
    return [
        Spawn(f"{name}.{i}" + (f".r{r}" if r else ""), values(i, r))
        for i in range(count)
        for r in range(replicas)
    ]


@dataclass(frozen=True)
class Kind:
    """One sort of process of a cluster, described once.

    ``children(plan)``: the processes ``shardex up`` starts of it, in start order;
    ``ports(plan)``: every port they bind; ``scrape(layout, replicas)``: their
    metrics ports (None: no Prometheus job); ``env``: the .env lines the Procfile's process
    of this kind reads; ``procfile``: its Procfile line's command (None: not in the Procfile);
    ``optional``: ``shardex up`` starts it only when asked (and only then scrapes it).
    """

    name: str
    options: tuple[Opt, ...]
    children: Callable[[Plan], list[Spawn]]
    ports: Callable[[Plan], list[int]]
    scrape: Callable[[Layout, int], list[int]] | None = None
    procfile: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    optional: bool = False

    def option(self, name: str) -> Opt:
        for opt in self.options:
            if opt.name == name:
                return opt
        raise KeyError(f"shardex {self.name} has no option {name!r}")

    def click_options(self) -> Callable[[Any], Any]:
        """Every option of ``shardex <name>``, as click options (in ``--help``'s order)."""
        return apply_options(self.options)

    def argv(self, values: dict[str, Any]) -> list[str]:
        """``[name, --flag, value, ...]`` for ``values`` (option name → value), in the
        options' declared order; a name the kind does not declare is a KeyError."""
        for name in values:
            self.option(name)
        out = [self.name]
        for opt in self.options:
            if opt.name in values:
                out += opt.argv(values[opt.name])
        return out

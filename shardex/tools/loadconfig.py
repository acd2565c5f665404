"""A load run's settings (``LoadConfig``), checked on creation: every bad value is a
``LoadError`` naming its option, before any process starts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shardex.auth import AuthError, KeyFile
from shardex.engine import DEFAULT_MARKETS, Market
from shardex.tools.workload import DEFAULT_MIX_TEXT, KINDS, format_mix
from shardex.wire.protocol import markets_from_wire
from shardex.wire.transport import NO_KEY, EndpointError, check_endpoint, find_key

FATE_WAIT_S = 30.0  # default: how long after the load open fates are still asked


class LoadError(Exception):
    """A problem the user can fix (bad endpoint, bad option); the message says which."""


def parse_mix(text: str) -> dict[str, int]:
    """``"limit=45,ioc=10,..."`` → weights; ``LoadError`` naming the bad part."""
    mix: dict[str, int] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in KINDS:
            raise LoadError(f"--mix: unknown kind {name!r} ({', '.join(KINDS)})")
        try:
            mix[name] = int(weight)
        except ValueError:
            raise LoadError(f"--mix: weight of {name} must be an integer, got {weight!r}") from None
        if mix[name] < 0:
            raise LoadError(f"--mix: weight of {name} must be >= 0")
    if sum(mix.values()) <= 0:
        raise LoadError("--mix: weights must add up to more than 0")
    return mix


@dataclass
class LoadConfig:
    """One run's settings; validated on creation (``LoadError`` with the option's name)."""

    endpoint: str
    rate: float | None = None  # orders/s offered (open loop); None: closed loop
    concurrency: int = 1  # connections per generator process
    window: int = 8
    batch: int = 100
    duration: float | None = 10.0  # seconds; None only together with ``orders``
    orders: int | None = None
    symbols: int | Sequence[str] = 2  # the first K markets of the cluster, or names
    accounts: int = 100
    mix: str | Mapping[str, int] = DEFAULT_MIX_TEXT
    seed: int = 1
    direct: bool = False
    procs: int = 1
    timeout: float = 5.0
    markets: dict[str, list[str]] | None = None  # wire form; filled from the cluster by ``run``
    key: str | None = None  # key file path; "none": no key; None: the client default
    # account tier: "auto" (on iff the cluster has account shards), "on", "off"
    risk: str = "auto"
    fund: bool = True  # with risk on: top every account up before sending (admin key)
    fate_wait: float = FATE_WAIT_S  # seconds after the load to keep asking open fates
    id_prefix: str = ""  # set by ``run``: every order id of the run starts with it
    account_shards: int = 0  # M, filled from the cluster by ``run``

    def __post_init__(self) -> None:
        try:
            check_endpoint(self.endpoint)
        except EndpointError as exc:
            raise LoadError(str(exc)) from None
        if isinstance(self.mix, str):
            self.mix = parse_mix(self.mix)
        else:
            self.mix = parse_mix(format_mix(self.mix))
        if self.rate is not None and not self.rate > 0:
            raise LoadError(f"--rate must be > 0 orders/s, got {self.rate}")
        if self.orders is not None and self.orders < 1:
            raise LoadError(f"--orders must be >= 1, got {self.orders}")
        if self.duration is not None and not self.duration > 0:
            raise LoadError(f"--duration must be > 0 seconds, got {self.duration}")
        if self.duration is None and self.orders is None:
            raise LoadError("give --duration (seconds) or --orders (a count): a run must end")
        for name in ("concurrency", "window", "batch", "procs", "accounts"):
            if getattr(self, name) < 1:
                raise LoadError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if not self.timeout > 0:
            raise LoadError(f"--timeout must be > 0 seconds, got {self.timeout}")
        if not self.fate_wait >= 0:
            raise LoadError(f"--fate-wait must be >= 0 seconds, got {self.fate_wait}")
        if isinstance(self.symbols, int):
            if self.symbols < 1:
                raise LoadError(f"--symbols must be >= 1, got {self.symbols}")
        elif not self.symbols or not all(isinstance(s, str) for s in self.symbols):
            raise LoadError("--symbols: give a count or a non-empty list of symbol names")
        else:
            self.symbols = list(self.symbols)
        if self.risk not in ("auto", "on", "off"):
            raise LoadError(f"--risk must be on, off or auto, got {self.risk!r}")
        self.keyfile()  # a named key file that cannot be read fails here, before any process

    def keyfile(self) -> KeyFile | None:
        """The key the generators connect with (see ``shardex.wire.transport.find_key``)."""
        key: Any = self.key
        if isinstance(key, str) and key.strip().lower() in NO_KEY:
            key = False
        try:
            return find_key(key)
        except AuthError as exc:
            raise LoadError(str(exc)) from None

    def market_table(self) -> dict[str, Market]:
        return markets_from_wire(self.markets) if self.markets else dict(DEFAULT_MARKETS)

    def symbol_names(self) -> list[str]:
        """The symbols traded: names as given, or the first K of the market table (the built-in
        markets first, in their usual order, then the cluster's others by name)."""
        table = self.market_table()
        names = [s for s in DEFAULT_MARKETS if s in table]
        names += sorted(set(table) - set(DEFAULT_MARKETS))
        if isinstance(self.symbols, int):
            if self.symbols > len(names):
                raise LoadError(f"--symbols must be 1..{len(names)} (the cluster's markets)")
            return names[: self.symbols]
        missing = [s for s in self.symbols if s not in names]
        if missing:
            raise LoadError(f"--symbols: {missing[0]} is not a market of the cluster")
        return list(self.symbols)

    def describe(self) -> dict[str, Any]:
        """Everything needed to repeat the run (the report's ``config``)."""
        return {
            "endpoint": self.endpoint,
            "mode": "open" if self.rate else "closed",
            "rate": self.rate,
            "concurrency": self.concurrency,
            "connections": self.concurrency * self.procs,
            "window": self.window,
            "batch": self.batch,
            "duration": self.duration,
            "orders": self.orders,
            "symbols": self.symbol_names(),
            "accounts": self.accounts,
            "mix": format_mix(self.mix),  # type: ignore[arg-type]
            "seed": self.seed,
            "direct": self.direct,
            "procs": self.procs,
            "timeout": self.timeout,
            "fate_wait": self.fate_wait,
            "risk": self.risk,
            "account_shards": self.account_shards,
        }

"""The cluster's shape as the router tells it (shard count, account shards, direct endpoints)
and the market table the client learns from it. A mixin of ``ClientCore``; no I/O here."""

from __future__ import annotations

from typing import Any

from shardex.client.errors import ShardexError
from shardex.clock import REAL, Clock
from shardex.engine import Market
from shardex.engine.listing import SYMBOL_RE
from shardex.placement.core import PlacementMap, initial
from shardex.wire.protocol import markets_from_wire, markets_to_wire
from shardex.wire.transport import EndpointError, TopologyError, check_endpoint, parse_topology

MARKETS_RETRY_S = 10.0  # seconds between attempts to learn the cluster's markets


class Topology:
    """Topology and markets (``markets_source``: "given", "cluster", "defaults" or None)."""

    endpoint: str
    shard_endpoints: list[str] | None
    shards: int | None
    accounts: int
    markets: dict[str, Market]
    markets_source: str | None
    _markets_retry_at: float
    clock: Clock = REAL  # where "now" is read (``shardex.clock``; a client given one sets it)
    placement: PlacementMap | None = None  # pair → shard, as the router last said

    def owner_of(self, symbol: str) -> int:
        """The engine shard of ``symbol``: the placement map the router sent (the map without
        pins until it sent one). A shard refusing it with ``wrong_shard`` means the map is
        stale: the topology refresh that follows brings the newer one."""
        p = self.placement
        if p is None or p.shards != self.shards:
            p = self.placement = initial(self.shards or 1)
        return p.owner(symbol)

    def learn_placement(self, wire: Any) -> None:
        """Take the router's map when it is newer than the one held (a malformed one: kept)."""
        try:
            new = PlacementMap.from_wire(wire)
        except ValueError:
            return
        held = self.placement
        if held is None or held.shards != new.shards or new.version > held.version:
            self.placement = new

    def apply_topology(self, error: Any, results: Any) -> dict[str, Any]:
        """Check a topology reply, take the shard count and (if not given) the markets."""
        try:
            info = parse_topology(error, results)
        except TopologyError as exc:
            raise ShardexError(f"router at {self.endpoint}: {exc}") from None
        if self.shard_endpoints is not None and len(self.shard_endpoints) != info["shards"]:
            raise ShardexError(
                f"{len(self.shard_endpoints)} shard endpoints given but the cluster has "
                f"{info['shards']} shards"
            )
        self.shards = info["shards"]
        accounts = info.get("accounts", 0)
        self.accounts = accounts if type(accounts) is int and 0 <= accounts <= 100 else 0
        self.learn_markets([t.get("markets") for t in info["topology"]])
        if "placement" in info:
            self.learn_placement(info["placement"])
        return info

    def direct_endpoints(self, info: dict[str, Any]) -> list[str]:
        """Each shard's direct endpoint from a checked topology, or ``ShardexError`` naming the
        shard that has not registered one (yet)."""
        eps = []
        for i, t in enumerate(info["topology"]):
            ep = t.get("direct")
            if type(ep) is not str or not ep:
                raise ShardexError(f"shard {i} has not registered a direct endpoint")
            try:
                eps.append(check_endpoint(ep))
            except EndpointError as exc:
                raise ShardexError(f"shard {i}: {exc}") from None
        return eps

    def learn_markets(self, tables: list[Any]) -> bool:
        """Take the cluster's markets (wire tables, one per shard; unreadable ones skipped)
        unless the caller gave them. Returns True when the table is now known."""
        if self.markets_source == "given":
            return True
        merged: dict[str, Market] = {}
        for t in tables:
            if t is None:
                continue
            try:
                merged.update(markets_from_wire(t))
            except ValueError:
                continue
        if merged:
            self.markets = merged
            self.markets_source = "cluster"
        return self.markets_source is not None

    def learn_markets_reply(self, error: Any, results: Any) -> None:
        """An ``OP_MARKETS`` reply → markets; a shard that answered but does not say (an older
        shard rejects the op) means defaults for good; no answer leaves it to try again."""
        if error is not None:
            return
        res = results[0] if isinstance(results, tuple | list) and len(results) == 1 else None
        if not (isinstance(res, dict) and self.learn_markets([res.get("markets")])):
            self.markets_source = "defaults"

    def unlisted(self, cmds: list[dict[str, Any]]) -> bool:
        """True when a command names a well-formed symbol this client's table lacks and the
        table is the cluster's (a pair listed since: ask again before sending; a given table is
        the caller's word, and garbage symbols never cost a round of reads)."""
        if self.markets_source == "given":
            return False
        for c in cmds:
            symbol = c.get("symbol")
            if type(symbol) is str and symbol not in self.markets and SYMBOL_RE.fullmatch(symbol):
                return True
        return False

    def markets_wire(self) -> dict[str, list[str]]:
        """This client's table in the wire form (kept when a refresh merges the shards')."""
        return markets_to_wire(self.markets)

    @staticmethod
    def reply_markets(error: Any, results: Any) -> Any:
        """An ``OP_MARKETS`` reply's wire table (None: no readable answer)."""
        res = results[0] if isinstance(results, tuple | list) and len(results) == 1 else None
        return res.get("markets") if error is None and isinstance(res, dict) else None

    def needs_markets(self) -> bool:
        return self.markets_source is None

    def markets_due(self) -> bool:
        """True when the market table is still unknown and it is time to ask (again)."""
        return self.markets_source is None and self.clock.monotonic() >= self._markets_retry_at

    def markets_tried(self) -> None:
        """After an attempt: if the cluster could not say, wait before asking again (so a down
        shard does not cost every call a timeout)."""
        if self.markets_source is None:
            self._markets_retry_at = self.clock.monotonic() + MARKETS_RETRY_S

    @staticmethod
    def markets_shard(info: dict[str, Any] | None) -> int | None:
        """The shard to ask ``OP_MARKETS``: the first registered one (0 with no topology)."""
        if info is None:
            return 0
        for i, t in enumerate(info["topology"]):
            if t.get("pid") is not None:
                return i
        return None

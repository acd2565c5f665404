"""Stream entries for the history tests, made by the bridge's own formatter from real event
tuples (so the tests feed the writer exactly what the bridge writes), and a little market
story: two accounts, an order each, a trade between them, balance changes."""

from __future__ import annotations

from typing import Any

from shardex.accounts.assets import AssetTable
from shardex.accounts.codes import AE_BALANCE, AE_FEES, AE_FORWARD
from shardex.config import load_markets
from shardex.engine.codes import (
    BUY,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_TRADE,
    GTC,
    LIMIT,
    OP_NEW,
    SELL,
    STP_NONE,
)
from shardex.node.bridge.entries import EntryFormatter

MARKETS = load_markets()
FMT = EntryFormatter(MARKETS, AssetTable(MARKETS))


def fields(flat: list[str]) -> dict[str, str]:
    """A flat entry field list → the dict redis-py gives back."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def forward(seq: int, account: str, oid: str, side: int, price: int, qty: int,
            symbol: str = "BTC-USD", eshard: int = 0) -> tuple:  # fmt: skip
    """An account shard's AE_FORWARD of a new limit GTC order."""
    cmd = (OP_NEW, symbol, oid, account, side, LIMIT, price, qty, GTC, False, STP_NONE)
    return (AE_FORWARD, seq, eshard, 0, cmd)


def order_entry(ev: tuple, shard: int = 0) -> tuple[str, dict[str, str]]:
    item = FMT.order_item(ev, shard)
    assert item is not None
    return item[0], fields(item[1])


def balance_entry(ev: tuple, shard: int = 0) -> tuple[str, dict[str, str]]:
    eid, flat = FMT.balance_item(ev, shard)
    return eid, fields(flat)


def engine_entry(ev: tuple, shard: int = 0) -> tuple[str, dict[str, str]]:
    item = FMT.item(ev, shard)
    return item[0], fields(item[1])


class Story:
    """Per round: a sells 0.01 BTC at 100, b buys 0.004 at 100 (a trade), a cancels the rest.
    ``streams``: key → [(id, fields)] as the bridge writes them (account shard 0, engine 0)."""

    def __init__(self, n: int = 1, ts: int | None = None, same: bool = False) -> None:
        """``n`` rounds; ``ts``: entries carry exchange times from it (+1 ms per entry of a
        stream); ``same``: every round between alice and bob (else a0/b0, a1/b1...)."""
        self.streams: dict[str, list[tuple[str, dict[str, str]]]] = {
            "shardex:orders:0": [], "shardex:balances:0": [], "shardex:events:0": []}  # fmt: skip
        self.aseq = self.eseq = 0
        self.ts = ts
        self.same = same
        for k in range(n):
            self.round(k)

    def _add(self, key: str, entry: tuple[str, dict[str, str]]) -> None:
        if self.ts is not None:
            entry[1]["ts"] = str(self.ts + len(self.streams[key]))
        self.streams[key].append(entry)

    def balance(self, account: str, asset: str, avail: int, held: int, why: str, ref: str) -> None:
        self.aseq += 1
        ev = (AE_BALANCE, self.aseq, account, asset, avail, held, why, ref)
        self._add("shardex:balances:0", balance_entry(ev))

    def order(self, account: str, oid: str, side: int, price: int, qty: int) -> None:
        self.aseq += 1
        ev = forward(self.aseq, account, oid, side, price, qty)
        self._add("shardex:orders:0", order_entry(ev))

    def event(self, ev_kind: int, *rest: Any) -> None:
        self.eseq += 1
        self._add("shardex:events:0", engine_entry((ev_kind, self.eseq, "BTC-USD", *rest)))

    def round(self, k: int) -> None:
        a, b = ("alice", "bob") if self.same else (f"a{k}", f"b{k}")
        self.balance(a, "BTC", 0, 100_000_000, "hold", f"sa{k}")
        self.order(a, f"sa{k}", SELL, 10_000, 100)
        self.balance(b, "USD", 0, 4_000, "hold", f"bb{k}")
        self.order(b, f"bb{k}", BUY, 10_000, 40)
        self.event(EV_ACCEPTED, f"sa{k}")
        self.event(EV_ACCEPTED, f"bb{k}")
        self.event(EV_TRADE, 10_000, 40, f"bb{k}", f"sa{k}", BUY, 1000 + k)
        self.event(EV_CANCELLED, f"sa{k}", "user", 60)
        self.aseq += 1  # (a fee-ledger change: in the balances stream, no account's row)
        self._add("shardex:balances:0", balance_entry((AE_FEES, self.aseq, "USD", 3 + k)))


def load(redis: Any, streams: dict[str, list[tuple[str, dict[str, str]]]],
         only: tuple[str, ...] | None = None) -> None:  # fmt: skip
    """XADD the entries of ``streams`` (those of the keys in ``only``) with their ids."""
    for key, entries in streams.items():
        if only is None or key in only:
            for eid, f in entries:
                redis.xadd(key, f, id=eid)

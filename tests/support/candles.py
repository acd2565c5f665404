"""Trades-stream entries as the bridge writes them (plus ``ts``), and candles and tickers
recomputed from them independently of ``shardex.candles`` (Decimal arithmetic on the entries'
own strings: no ticks, no lots, no code of the worker)."""

from __future__ import annotations

import random
from decimal import Decimal, localcontext
from typing import Any

from shardex.engine import Market

T0 = 1_796_601_600_000  # 2026-12-07T00:00:00Z, ms


def trade_entries(
    market: Market, n: int, seed: int, start_seq: int = 1, t0: int = T0, backwards: bool = False
) -> list[tuple[str, dict[str, str]]]:
    """``n`` trades of ``market`` (trade ids 1..n) as (entry id, fields): prices wander around
    1000 ticks, times advance by 0-90 s with an occasional quiet hour (empty buckets) or day;
    ``backwards``: now and then a trade stamped a few minutes before the previous one."""
    rnd = random.Random(seed)
    out = []
    ts, price = t0 + rnd.randrange(60_000), 100_000
    for i in range(n):
        step = rnd.choice([0, 5, 400, 9_000, 30_000, 90_000])
        if rnd.random() < 0.03:
            step = rnd.choice([3_600_000, 5 * 3_600_000, 86_400_000 + 7])
        ts += step
        stamp = ts - rnd.randrange(1, 600_000) if backwards and rnd.random() < 0.05 else ts
        price = max(1, price + rnd.randrange(-50, 51))
        qty = rnd.randrange(1, 5000)
        seq = start_seq + 2 * i
        out.append((f"{seq}-0", {
            "price": market.price_str(price), "qty": market.qty_str(qty),
            "taker": f"o{2 * i}", "maker": f"o{2 * i + 1}",
            "taker_side": rnd.choice(["buy", "sell"]), "trade_id": str(i + 1),
            "seq": str(seq), "shard": "0", "ts": str(stamp),
        }))  # fmt: skip
    return out


def reference_candles(entries: list[tuple[str, dict[str, str]]], ms: int) -> list[dict[str, Any]]:
    """Every candle of one interval, oldest first, straight from the entries' strings (each
    entry applied once per trade_id; entries without a valid ts are the caller's to leave
    out)."""
    by_bucket: dict[int, list[dict[str, str]]] = {}
    seen = set()
    for _, f in entries:
        if f["trade_id"] in seen:
            continue
        seen.add(f["trade_id"])
        ts = int(f["ts"])
        by_bucket.setdefault(ts // ms * ms, []).append(f)
    out = []
    with localcontext() as ctx:
        ctx.prec = 200
        for start in sorted(by_bucket):
            ts = sorted(by_bucket[start], key=lambda f: int(f["trade_id"]))
            prices = [Decimal(f["price"]) for f in ts]
            out.append({
                "start": start, "open": prices[0], "high": max(prices), "low": min(prices),
                "close": prices[-1], "volume": sum(Decimal(f["qty"]) for f in ts),
                "quote_volume": sum(Decimal(f["price"]) * Decimal(f["qty"]) for f in ts),
                "trades": len(ts), "first_trade_id": int(ts[0]["trade_id"]),
                "last_trade_id": int(ts[-1]["trade_id"]),
            })  # fmt: skip
    return out


def as_decimals(c: dict[str, Any]) -> dict[str, Any]:
    """A candle's public JSON (decimal strings) with Decimals, to compare by value."""
    money = ("open", "high", "low", "close", "volume", "quote_volume")
    return {k: Decimal(v) if k in money else v for k, v in c.items()}


def reference_ticker(entries: list[tuple[str, dict[str, str]]], at: int) -> dict[str, Any]:
    """The 24 h ticker at ``at`` straight from the entries (trades with ts in the 1440
    one-minute buckets ending with ``at``'s; ts must grow with trade_id here)."""
    end = at // 60_000 * 60_000 + 60_000
    first = end - 86_400_000
    inside = [f for _, f in entries if first <= int(f["ts"]) < end]
    before = [f for _, f in entries if int(f["ts"]) < end]
    last = Decimal(before[-1]["price"]) if before else None
    if not inside:
        return {"last": last, "open": None, "high": None, "low": None, "volume": Decimal(0),
                "trades": 0, "change": None}  # fmt: skip
    prices = [Decimal(f["price"]) for f in inside]
    return {
        "last": prices[-1], "open": prices[0], "high": max(prices), "low": min(prices),
        "volume": sum(Decimal(f["qty"]) for f in inside), "trades": len(inside),
        "change": prices[-1] - prices[0],
    }  # fmt: skip

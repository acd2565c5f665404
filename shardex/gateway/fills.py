"""An account's fills for ``GET /v1/fills``: its account shard's ``fill`` events (the bridge's
``shardex:balances:<j>`` entries), newest first, each with its trade's price, size and side.

Why this source: a fill's fee is decided by the account shard that settles it (the fee
schedule, the account's tier, a rebate), and only its ``fill`` event carries it; the history
database keeps the fills without their fee. The event names the order, the trade (``ref`` =
``t<trade_id>``), the role and the fee; price and size are the trade's, read from the pair's
trades stream (``trade_id`` grows one by one along it, so a backwards read stops once it has
passed the oldest trade it looks for). Side: the taker's is the trade's, the maker's the other.

Paging: a page is up to ``limit`` fills older than the cursor (the stream entry id of the last
fill of the previous page). The balances stream holds every account of the shard, so one page
reads at most ``MAX_SCAN`` entries: a page can come back short with a cursor to go on from;
``next`` is None when the stream has nothing older. The pure parts (``pick``, ``shaped``) are
tested alone; ``FillReader`` is the thin Redis loop around them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

BALANCES_PREFIX, TRADES_PREFIX = "shardex:balances:", "shardex:trades:"
CHUNK = 500  # entries per XREVRANGE
MAX_SCAN = 20_000  # entries of one stream one request reads at most
CURSOR = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
OTHER = {"buy": "sell", "sell": "buy"}
Entry = tuple[str, Mapping[str, str]]  # (stream entry id, fields)


class StreamReader(Protocol):
    async def xrevrange(self, name: str, max: str = "+", min: str = "-",  # noqa: A002
                        count: int | None = None) -> list[Any]: ...  # fmt: skip


def trade_id_of(fill: Mapping[str, str]) -> int | None:
    ref = fill.get("ref", "")
    return int(ref[1:]) if ref[:1] == "t" and ref[1:].isdigit() and len(ref) < 21 else None


def pick(entries: Iterable[Entry], account: str, symbol: str | None) -> list[Entry]:
    """The ``fill`` entries of ``account`` (of ``symbol`` when given), in the order read."""
    return [(eid, f) for eid, f in entries
            if f.get("ev") == "fill" and f.get("account") == account
            and (symbol is None or f.get("symbol") == symbol)]  # fmt: skip


def shaped(fill: Mapping[str, str], trade: Mapping[str, str] | None) -> dict[str, Any]:
    """One fill as the REST API shows it (amounts as the streams' decimal strings); price,
    qty and side are None when its trade was not found (trimmed from the trades stream)."""
    role = fill.get("role")
    taker_side = trade.get("taker_side") if trade else None
    side = taker_side if role == "taker" else OTHER.get(taker_side or "")
    ts = fill.get("ts", "")
    return {"symbol": fill.get("symbol"), "id": fill.get("id"), "trade_id": trade_id_of(fill),
            "side": side, "price": trade.get("price") if trade else None,
            "qty": trade.get("qty") if trade else None, "fee": fill.get("fee"),
            "fee_asset": fill.get("fee_asset"), "fee_bps": _int(fill.get("fee_bps")),
            "role": role, "ts": _int(ts)}  # fmt: skip


def _int(v: str | None) -> int | None:
    if v is None:
        return None
    try:
        return int(v)
    except ValueError:
        return None


def wanted(fills: Sequence[Entry]) -> dict[str, set[int]]:
    """symbol → the trade ids these fills need."""
    out: dict[str, set[int]] = {}
    for _, f in fills:
        tid = trade_id_of(f)
        if tid is not None and f.get("symbol"):
            out.setdefault(f["symbol"], set()).add(tid)
    return out


class FillReader:
    """Reads fills from Redis (``r``: a redis.asyncio client with ``decode_responses``)."""

    def __init__(self, r: StreamReader) -> None:
        self.r = r

    async def page(self, shard: int, account: str, symbol: str | None, limit: int,
                   after: str | None) -> tuple[list[dict[str, Any]], str | None]:  # fmt: skip
        """Up to ``limit`` fills of ``account`` older than cursor ``after``, newest first,
        and the cursor of the next page (None: nothing older)."""
        found, nxt = await self._fills(BALANCES_PREFIX + str(shard), account, symbol, limit,
                                       after)  # fmt: skip
        trades: dict[tuple[str, int], Mapping[str, str]] = {}
        for sym, ids in wanted(found).items():
            trades.update({(sym, t): e for t, e in (await self._trades(sym, ids)).items()})
        rows = [shaped(f, trades.get((f.get("symbol", ""), trade_id_of(f) or -1)))
                for _, f in found]  # fmt: skip
        return rows, nxt

    async def _fills(self, stream: str, account: str, symbol: str | None, limit: int,
                     after: str | None) -> tuple[list[Entry], str | None]:  # fmt: skip
        top, found, scanned = ("(" + after) if after else "+", [], 0
        while scanned < MAX_SCAN:
            batch = await self.r.xrevrange(stream, max=top, min="-", count=CHUNK)
            scanned += len(batch)
            for eid, f in batch:
                found.extend(pick([(eid, f)], account, symbol))
                if len(found) == limit:
                    return found, eid
            if len(batch) < CHUNK:
                return found, None
            top = "(" + batch[-1][0]
        return found, top[1:]

    async def _trades(self, symbol: str, ids: set[int]) -> dict[int, Mapping[str, str]]:
        """The trades ``ids`` of ``symbol``'s stream, reading back from its newest."""
        out: dict[int, Mapping[str, str]] = {}
        top, scanned, oldest = "+", 0, min(ids)
        while scanned < MAX_SCAN and len(out) < len(ids):
            batch = await self.r.xrevrange(TRADES_PREFIX + symbol, max=top, min="-",
                                           count=CHUNK)  # fmt: skip
            scanned += len(batch)
            for _, f in batch:
                tid = _int(f.get("trade_id"))
                if tid in ids:
                    out[tid] = f
            last = _int(batch[-1][1].get("trade_id")) if batch else None
            if len(batch) < CHUNK or last is None or last < oldest:
                break
            top = "(" + batch[-1][0]
        return out

"""The private ``user`` channel's pure core: stream entries in, per-account messages out.

No engine event names an account (an ``accepted`` or ``cancelled`` carries the pair and the
order id only; a trade the two order ids), and a ``fill`` of the account tier names the trade
but not its price or size. So the feed joins three kinds of streams, each read once by the
gateway however many users follow them:

- ``shardex:orders:<j>`` (each new order an account shard forwarded): learns who owns
  (symbol, id), and its side; the ``new`` order message.
- ``shardex:events:<i>`` (engine shard i): ``accepted``, ``cancelled`` (with its reason:
  ``expired``, ``deadman``...), ``amended``, ``triggered``, ``rejected`` and each trade's two
  sides as order messages of their owners; trades also fill the price cache of the fills.
- the same events streams' perp ``position``, ``margin`` and ``liquidation`` events name
  their account: each is that account's message as it is (no join). An ``adl`` event names
  two: a message to each (``role`` ``deleveraged`` or ``bankrupt``, its own signed lots
  ``closed``), neither naming the other account.
- ``shardex:balances:<j>``: ``balance`` entries (free and held of one asset) and ``fill``
  entries (joined with their trade's price, size and the order's side).

The bridge writes these streams from different processes, so an engine event can be read
before the orders entry that names its owner, and a fill before its trade: such an entry is
held (bounded in number and in time) until the other arrives. Nothing here reads a clock:
the caller passes ``now`` (seconds, monotonic) for the holds' expiry.

A message is ``(account, dict)``; its ``src`` (the stream, short: ``o0``, ``e1``, ``b0``) and
``src_seq`` (the entry's seq) are where it came from: a client resumes from them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

ORDERS_PREFIX, BALANCES_PREFIX = "shardex:orders:", "shardex:balances:"
EVENTS_PREFIX = "shardex:events:"
OWNERS_MAX = 1_000_000  # (symbol, id) → owner remembered (oldest forgotten first)
TRADES_MAX = 200_000  # (symbol, trade_id) → price, qty, taker side remembered
HOLD_MAX = 10_000  # entries held waiting for their owner or their trade
HOLD_SECONDS = 30.0  # held this long at most; then sent without the missing part, or dropped
ORDER_EVENTS = ("accepted", "cancelled", "amended", "triggered", "rejected")
ORDER_FIELDS = ("reason", "qty", "price", "code", "last", "trigger")
# a perp pair's events that name their account: a message of that account as it is
ACCOUNT_EVENTS = {"position": ("size", "cost", "realized"), "margin": ("amount", "collateral"),
                  "liquidation": ("closed", "bankruptcy", "notional", "settled", "uncovered")}
Message = tuple[str, dict[str, Any]]
Entry = tuple[str, Mapping[str, str]]


def short(key: str) -> str:
    """A stream key's short name in messages: ``o<j>``, ``e<i>``, ``b<j>``."""
    for prefix, letter in ((ORDERS_PREFIX, "o"), (EVENTS_PREFIX, "e"), (BALANCES_PREFIX, "b")):
        if key.startswith(prefix):
            return letter + key.removeprefix(prefix)
    return key


def long(src: str) -> str | None:
    """The stream key of a short name (None if it is not one)."""
    prefixes = {"o": ORDERS_PREFIX, "e": EVENTS_PREFIX, "b": BALANCES_PREFIX}
    prefix, num = prefixes.get(src[:1]), src[1:]
    if prefix is None or not num.isdigit() or len(num) > 4:
        return None
    return prefix + str(int(num))


def entry_seq(entry_id: str) -> int:
    return int(entry_id.split("-")[0])


@dataclass
class Held:
    """Entries waiting for their owner (engine events) or their trade (fills)."""

    by_key: dict[tuple[str, str], list[tuple[float, str, str, Mapping[str, str]]]] = field(
        default_factory=dict)
    count: int = 0

    def add(self, key: tuple[str, str], now: float, src: str, eid: str,
            f: Mapping[str, str]) -> bool:  # fmt: skip
        if self.count >= HOLD_MAX:
            return False
        self.by_key.setdefault(key, []).append((now, src, eid, f))
        self.count += 1
        return True

    def take(self, key: tuple[str, str]) -> list[tuple[float, str, str, Mapping[str, str]]]:
        got = self.by_key.pop(key, [])
        self.count -= len(got)
        return got

    def expired(self, now: float) -> list[tuple[float, str, str, Mapping[str, str]]]:
        out = []
        for key in [k for k, v in self.by_key.items() if now - v[0][0] > HOLD_SECONDS]:
            out.extend(self.take(key))
        return out


class UserFeed:
    """Owners, trade prices and held entries; ``wanted(account)`` says whether anyone follows
    an account (messages of accounts nobody follows are not built)."""

    def __init__(self, wanted: Callable[[str], bool] = lambda _a: True) -> None:
        self.wanted = wanted
        self.owners: dict[tuple[str, str], tuple[str, str]] = {}  # (symbol, id) → (account, side)
        self.trades: dict[tuple[str, str], tuple[str, str, str]] = {}  # → price, qty, taker side
        self.waiting_owner = Held()
        self.waiting_trade = Held()
        self.dropped = 0  # entries given up on (no owner within HOLD_SECONDS, or held full)

    def learn(self, f: Mapping[str, str]) -> None:
        """An orders-stream entry: who owns (symbol, id)."""
        symbol, oid, account = f.get("symbol"), f.get("id"), f.get("account")
        if symbol and oid and account:
            self.owners[(symbol, oid)] = (account, f.get("side", ""))
            if len(self.owners) > OWNERS_MAX:
                del self.owners[next(iter(self.owners))]

    def orders(self, key: str, entries: list[Entry], now: float,
               live: bool = True) -> list[Message]:  # fmt: skip
        """Entries of ``shardex:orders:<j>``: owners learnt, ``new`` messages, and (live)
        the engine events that waited for these owners. ``live`` False: a replay for one
        client (it neither takes held entries nor holds any)."""
        src, out = short(key), []
        for eid, f in entries:
            self.learn(f)
            account = f.get("account", "")
            if account and self.wanted(account):
                msg = {k: f[k] for k in ("symbol", "id", "side", "price", "qty", "tif",
                                         "trigger", "expire") if k in f}  # fmt: skip
                msg["order_type"] = f.get("type")  # (``type`` is the message's)
                out.append((account, _order(account, src, eid, f, "new", msg)))
            if live:
                for _, hsrc, heid, hf in self.waiting_owner.take((f.get("symbol", ""),
                                                                    f.get("id", ""))):  # fmt: skip
                    out.extend(self._engine_one(hsrc, heid, hf, now, live=False))
        return out

    def events(self, key: str, entries: list[Entry], now: float,
               live: bool = True) -> list[Message]:  # fmt: skip
        """Entries of ``shardex:events:<i>``: order messages of their owners."""
        src, out = short(key), []
        for eid, f in entries:
            out.extend(self._engine_one(src, eid, f, now, live))
        return out

    def _engine_one(self, src: str, eid: str, f: Mapping[str, str], now: float,
                    live: bool) -> list[Message]:  # fmt: skip
        ev, symbol, oid = f.get("ev"), f.get("symbol", ""), f.get("id", "")
        if ev == "trade":
            return self._trade(src, eid, f, now, live)
        if ev in ACCOUNT_EVENTS:
            return _account_event(src, eid, f, self.wanted)
        if ev == "adl":
            return _adl_event(src, eid, f, self.wanted)
        if ev not in ORDER_EVENTS and ev != "traded":
            return []
        owner = self.owners.get((symbol, oid))
        if owner is None:
            self._wait(symbol, oid, now, src, eid, f, live)
            return []
        if not self.wanted(owner[0]):
            return []
        if ev == "traded":  # (one side of a trade that waited for its owner)
            return [(owner[0], _traded(owner, src, eid, f, oid, f.get("role", "")))]
        extra = {k: f[k] for k in ORDER_FIELDS if k in f}
        body = {"symbol": symbol, "id": oid, "side": owner[1], **extra}
        return [(owner[0], _order(owner[0], src, eid, f, str(ev), body))]

    def _trade(self, src: str, eid: str, f: Mapping[str, str], now: float,
               live: bool) -> list[Message]:  # fmt: skip
        """A trade: its price for the fills (and the fills that waited for it), and a
        ``traded`` order message for each side whose owner is known."""
        symbol, tid = f.get("symbol", ""), f.get("trade_id", "")
        price, qty, taker_side = f.get("price", ""), f.get("qty", ""), f.get("taker_side", "")
        out: list[Message] = []
        self.trades[(symbol, tid)] = (price, qty, taker_side)  # (a replay's fills need it too)
        if len(self.trades) > TRADES_MAX:
            del self.trades[next(iter(self.trades))]
        if live:
            for _, hsrc, heid, hf in self.waiting_trade.take((symbol, tid)):
                out.extend(self._fill(hsrc, heid, hf, now, live=False))
        for role, oid in (("taker", f.get("taker", "")), ("maker", f.get("maker", ""))):
            owner = self.owners.get((symbol, oid))
            if owner is None:
                one = {**f, "ev": "traded", "id": oid, "role": role}
                self._wait(symbol, oid, now, src, eid, one, live)
            elif self.wanted(owner[0]):
                out.append((owner[0], _traded(owner, src, eid, f, oid, role)))
        return out

    def _wait(self, symbol: str, oid: str, now: float, src: str, eid: str,
              f: Mapping[str, str], live: bool) -> None:  # fmt: skip
        if not live or not self.waiting_owner.add((symbol, oid), now, src, eid, f):
            self.dropped += 1

    def balances(self, key: str, entries: list[Entry], now: float,
                 live: bool = True) -> list[Message]:  # fmt: skip
        """Entries of ``shardex:balances:<j>``: balance and fill messages."""
        src, out = short(key), []
        for eid, f in entries:
            account, ev = f.get("account", ""), f.get("ev")
            if not account or not self.wanted(account):
                continue
            if ev == "balance":
                out.append((account, {"type": "balance", "account": account,
                                      "asset": f.get("asset"), "free": f.get("available"),
                                      "held": f.get("held"), "why": f.get("why"),
                                      "ref": f.get("ref"), **_where(src, eid, f)}))  # fmt: skip
            elif ev == "fill":
                out.extend(self._fill(src, eid, f, now, live))
        return out

    def _fill(self, src: str, eid: str, f: Mapping[str, str], now: float,
              live: bool) -> list[Message]:  # fmt: skip
        """A fill with its trade's price and size (held until the trade is read, live)."""
        symbol, ref = f.get("symbol", ""), f.get("ref", "")
        tid = ref[1:] if ref.startswith("t") else ref
        trade = self.trades.get((symbol, tid))
        if trade is None and live and self.waiting_trade.add((symbol, tid), now, src, eid, f):
            return []
        price, qty, taker_side = trade or (None, None, None)
        owner = self.owners.get((symbol, f.get("id", "")))
        side = owner[1] if owner else _side(f.get("role"), taker_side)
        account = f.get("account", "")
        return [(account, {"type": "fill", "account": account, "symbol": symbol,
                           "id": f.get("id"), "trade_id": _int(tid), "side": side,
                           "price": price, "qty": qty, "fee": f.get("fee"),
                           "fee_asset": f.get("fee_asset"), "role": f.get("role"),
                           **_where(src, eid, f)})]  # fmt: skip

    def expire(self, now: float) -> list[Message]:
        """Held entries past ``HOLD_SECONDS``: a fill goes without its price (null: its
        trade was never read); an engine event without an owner is dropped (counted)."""
        out: list[Message] = []
        for _, src, eid, f in self.waiting_trade.expired(now):
            out.extend(self._fill(src, eid, f, now, live=False))
        self.dropped += len(self.waiting_owner.expired(now))
        return out


def _account_event(src: str, eid: str, f: Mapping[str, str],
                   wanted: Callable[[str], bool]) -> list[Message]:  # fmt: skip
    """A perp event of one account (its position, margin, liquidation): its message."""
    account, ev = f.get("account", ""), f.get("ev", "")
    if not account or not wanted(account):
        return []
    body = {k: f.get(k) for k in ACCOUNT_EVENTS[ev]}
    return [(account, {"type": ev, "account": account, "symbol": f.get("symbol"), **body,
                       **_where(src, eid, f)})]  # fmt: skip


def _adl_event(src: str, eid: str, f: Mapping[str, str],
               wanted: Callable[[str], bool]) -> list[Message]:  # fmt: skip
    """An auto-deleveraging: one message to each of its accounts that someone follows. The
    event's ``closed`` is the deleveraged account's (signed: < 0 a short bought back); the
    bankrupt account closed the opposite."""
    closed = f.get("closed", "")
    negated = closed.removeprefix("-") if closed.startswith("-") else f"-{closed}"
    out: list[Message] = []
    for role, account, lots in (("deleveraged", f.get("account", ""), closed),
                                ("bankrupt", f.get("bankrupt", ""), negated)):  # fmt: skip
        if account and wanted(account):
            out.append((account, {"type": "adl", "account": account, "role": role,
                                  "symbol": f.get("symbol"), "closed": lots,
                                  "price": f.get("price"), **_where(src, eid, f)}))  # fmt: skip
    return out


def _side(role: str | None, taker_side: str | None) -> str | None:
    if taker_side not in ("buy", "sell") or role not in ("taker", "maker"):
        return None
    return taker_side if role == "taker" else ("sell" if taker_side == "buy" else "buy")


def _int(raw: str) -> int | None:
    return int(raw) if raw.isdigit() and len(raw) < 20 else None


def _where(src: str, eid: str, f: Mapping[str, str]) -> dict[str, Any]:
    return {"src": src, "src_seq": entry_seq(eid), "ts": _int(f.get("ts", ""))}


def _order(account: str, src: str, eid: str, f: Mapping[str, str], status: str,
           body: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    return {"type": "order", "account": account, "status": status, **body,
            **_where(src, eid, f)}  # fmt: skip


def _traded(owner: tuple[str, str], src: str, eid: str, f: Mapping[str, str], oid: str,
            role: str) -> dict[str, Any]:  # fmt: skip
    return _order(owner[0], src, eid, f, "traded", {
        "symbol": f.get("symbol"), "id": oid, "side": owner[1], "role": role,
        "price": f.get("price"), "qty": f.get("qty"), "trade_id": _int(f.get("trade_id", ""))})

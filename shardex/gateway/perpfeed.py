"""The public perp channels' pure core: engine events-stream entries in, channel messages out.

A perp pair's engine shard journals an ``index`` event per index (the new index and mark), a
``funding`` event per payment, a ``liquidation`` event per take-over and an ``adl`` event per
position deleveraged against a bankrupt one; the bridge writes each to the shard's events
stream with its seq as the entry id. The gateway's one XREAD loop already reads those streams
(for the book), so these four channels cost no extra read:

- ``mark``: ``index`` and ``mark`` of each index event;
- ``funding``: ``per_lot``, ``cumulative`` (the pair's cumulative index) and ``remainder``;
- ``liquidations``: the public part of a take-over, as an exchange's liquidation feed shows
  it: the liquidation order's ``side`` and ``qty``, its limit (the ``bankruptcy`` price), the
  ``notional`` it filled and the pair's insurance ``fund`` after. Never the account, nor what
  its equity paid into the fund (``settled``, ``uncovered``): those are the account's own.
- ``adl``: each auto-deleveraging, as public as a liquidation: the bankrupt position's
  closing ``side`` (as on ``liquidations``: a long is sold), the ``qty`` and the ``price``
  (the take-over's limit). Neither account: who was deleveraged is theirs to know (the
  ``user`` channel tells both).

Each message has ``seq`` (the event's, = its entry's) and ``prev_seq`` (the seq of the
previous message of the same channel and pair in the stream), so a client sees a gap as the
trades channel shows one. At start the gateway reads back the tail of each events stream
(``seed``) so the chain continues across gateway restarts and is the same on every gateway;
an event older than that look-back is unknown: ``prev_seq`` null. Nothing here reads a
clock or Redis.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# events-stream ``ev`` → channel, and each channel's fields copied from the entry as stored
CHANNEL_OF = {"index": "mark", "funding": "funding", "liquidation": "liquidations",
              "adl": "adl"}  # fmt: skip
PERP_CHANNELS = tuple(CHANNEL_OF.values())
FIELDS = {"mark": ("index", "mark"), "funding": ("per_lot", "cumulative", "remainder"),
          "liquidations": ("bankruptcy", "notional", "fund"), "adl": ("price",)}  # fmt: skip
LOOKBACK = 2000  # events-stream entries read back at start (the chains' previous seqs)

Entry = tuple[str, Mapping[str, str]]


def _seq(entry_id: str) -> int:
    return int(entry_id.split("-")[0])


def _int(raw: str | None) -> int | None:
    return int(raw) if raw is not None and raw.isdigit() and len(raw) < 20 else None


def message(channel: str, seq: int, prev: int | None, f: Mapping[str, str]) -> dict[str, Any]:
    """One entry's message on ``channel`` (decimal strings as the bridge stored them)."""
    msg: dict[str, Any] = {"channel": channel, "symbol": f.get("symbol"), "seq": seq,
                           "prev_seq": prev}  # fmt: skip
    if channel in ("liquidations", "adl"):  # (closed is signed: > 0 a long was closed, by a
        closed = f.get("closed", "")  # sell; an adl's is the deleveraged side's: the other way)
        short = closed.startswith("-") != (channel == "adl")
        msg["side"] = "buy" if short else "sell"
        msg["qty"] = closed.removeprefix("-")
    for k in FIELDS[channel]:
        msg[k] = f.get(k)
    msg["ts"] = _int(f.get("ts"))
    return msg


def entry_message(channel: str, symbol: str, seq: int, prev: int | None,
                  f: Mapping[str, str]) -> dict[str, Any] | None:  # fmt: skip
    """An events-stream entry's message on (``channel``, ``symbol``); None if it is not one
    of theirs (a resume replays the pair's events stream through this)."""
    if CHANNEL_OF.get(f.get("ev", "")) != channel or f.get("symbol") != symbol:
        return None
    return message(channel, seq, prev, f)


class PerpFeed:
    """The last seq and the last message of each (channel, symbol), and the events stream
    each perp pair's events were last read from (where a resume replays them)."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str], int] = {}
        self.latest: dict[tuple[str, str], dict[str, Any]] = {}
        self.stream: dict[str, str] = {}

    def entries(self, stream: str, entries: Iterable[Entry]
                ) -> list[tuple[str, str, dict[str, Any]]]:  # fmt: skip
        """New entries of events stream ``stream``, oldest first → (channel, symbol,
        message) of the perp events among them (every other event: nothing)."""
        out = []
        for eid, f in entries:
            channel, symbol = CHANNEL_OF.get(f.get("ev", "")), f.get("symbol")
            if channel is None or not symbol:
                continue
            key, seq = (channel, symbol), _seq(eid)
            msg = message(channel, seq, self.last.get(key), f)
            self.last[key], self.latest[key], self.stream[symbol] = seq, msg, stream
            out.append((channel, symbol, msg))
        return out

    def seed(self, stream: str, newest_first: Iterable[Entry]) -> None:
        """An events stream's tail, newest first (``XREVRANGE``): each chain's last seq and
        message, for the chains this gateway has not seen yet (the live entries come after)."""
        found: dict[tuple[str, str], list[Entry]] = {}
        for eid, f in newest_first:
            channel, symbol = CHANNEL_OF.get(f.get("ev", "")), f.get("symbol")
            if channel is None or not symbol or (channel, symbol) in self.last:
                continue
            two = found.setdefault((channel, symbol), [])
            if len(two) < 2:  # (the last one, and the one before it: its prev_seq)
                two.append((eid, f))
        for key, two in found.items():
            (eid, f), prev = two[0], _seq(two[1][0]) if len(two) > 1 else None
            self.last[key] = _seq(eid)
            self.latest[key] = message(key[0], _seq(eid), prev, f)
            self.stream.setdefault(key[1], stream)

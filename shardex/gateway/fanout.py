"""One step's messages of a channel, built once and handed to every subscriber as one piece
(pure: no I/O, no clock).

The hub publishes into a ``StepBatch`` (an O(1) append per message, whoever subscribes);
at the end of the step (one ``XREAD`` answer, one book read) it seals the batch into a
``Chunk`` per (channel, symbol): the messages in order, their seqs, and their WebSocket frames
concatenated once. Every subscriber's queue then takes a reference to the same chunk (one
queue entry per subscriber per step, not per message) and its writer sends the chunk's bytes
with everything else it has queued in one write. Each message is still its own WebSocket text
frame: only the work per subscriber shrank (docs/gateway.md#measured).

A trades subscription may ask for ``batch`` messages: the step's trades of a pair in one
message (``batch_msg``), its ``prev_seq`` the first trade's and its ``seq`` the last one's,
so the seq chain a client checks is the same chain, one link per step.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from shardex.gateway.wsframe import text_frame

Key = tuple[str, str]  # (channel, symbol)
TRADE_FIELDS = ("seq", "trade_id", "price", "qty", "side", "ts")  # a batched trade's fields


class Chunk(list[str]):  # noqa: FURB189 - a list: ``len`` (taken per subscriber) costs no call
    """Messages of one channel from one step (the list of their encoded texts): the same
    object for every subscriber."""

    def __init__(self, frames: list[str], seqs: list[int | None], weight: int = 0) -> None:
        super().__init__(frames)
        self.seqs = seqs
        self.last = seqs[-1] if seqs else None  # what a subscriber has after it, if said
        # what it counts for in a client's bounded queue: its messages, or a batch's trades
        # (a batch of 50 trades is as far behind as 50 single messages)
        self.weight = weight or len(frames)

    __hash__ = object.__hash__  # (an object: two chunks alike are still two)

    def __eq__(self, other: object) -> bool:
        return self is other

    @property
    def frames(self) -> list[str]:
        return self

    @cached_property
    def size(self) -> int:
        """The messages' bytes (the metrics' bytes out per subscriber)."""
        return sum(map(len, self))

    @cached_property
    def wire(self) -> bytes:
        """Every message's WebSocket frame, concatenated: built once, on first use."""
        return b"".join(text_frame(f.encode()) for f in self)


def encode(msg: Mapping[str, Any]) -> str:
    """The one encoding of a message (compact JSON; every subscriber gets these bytes)."""
    return json.dumps(msg, separators=(",", ":"))


def batch_msg(symbol: str, trades: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several consecutive trades messages of one pair as one ``batch`` message: ``prev_seq``
    the first's, ``seq`` the last's (the chain continues exactly), each trade its own fields."""
    return {"channel": "trades", "type": "batch", "symbol": symbol,
            "seq": trades[-1]["seq"], "prev_seq": trades[0]["prev_seq"],
            "trades": [{k: t[k] for k in TRADE_FIELDS} for t in trades]}  # fmt: skip


@dataclass
class StepBatch:
    """What one step published, per (channel, symbol), until it is sealed."""

    frames: dict[Key, list[str]] = field(default_factory=dict)
    seqs: dict[Key, list[int | None]] = field(default_factory=dict)
    trades: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # for batches

    def add(self, key: Key, frame: str, seq: int | None, trade: dict[str, Any] | None) -> None:
        """One message (O(1)); a trade's message dict too, should a batch be asked for."""
        self.frames.setdefault(key, []).append(frame)
        self.seqs.setdefault(key, []).append(seq)
        if trade is not None:
            self.trades.setdefault(key[1], []).append(trade)

    def __bool__(self) -> bool:
        return bool(self.frames)

    def seal(self) -> list[tuple[Key, Chunk, list[dict[str, Any]]]]:
        """Each key's chunk (and its trades, for a batch), in publishing order; then empty."""
        out = [(key, Chunk(frames, self.seqs[key]), self.trades.get(key[1], [])
                if key[0] == "trades" else []) for key, frames in self.frames.items()]  # fmt: skip
        self.frames, self.seqs, self.trades = {}, {}, {}
        return out


def batch_chunk(symbol: str, trades: Sequence[Mapping[str, Any]]) -> Chunk:
    """A one-message chunk: the step's trades of ``symbol`` as one ``batch`` message."""
    return Chunk([encode(batch_msg(symbol, trades))], [trades[-1]["seq"]], len(trades))

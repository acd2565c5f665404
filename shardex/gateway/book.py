"""One symbol's public L2 book feed: snapshot, deltas and the checksum (pure: no I/O, no clock).

The feed is built from the engine's own book reads (``OP_BOOK``), each taken atomically by the
pair's single writer at a known ``seq``: consecutive reads are diffed into a delta whose
``prev_seq`` is the seq of the read before it. A subscriber's snapshot is the last read the
feed published (its levels and seq), so the next delta continues it exactly: no gap, no
overlap. Engine events name no price or side for a resting order, so the events stream alone
could not rebuild a book; it only says *when* to read (docs/gateway.md).

Levels are ``(price, qty)`` decimal strings exactly as the engine's market formats them; the
checksum is computed over the same strings the messages carry.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

CHECKSUM_LEVELS = 10  # levels per side in the checksum
DEFAULT_DEPTH = 25  # levels per side a book subscription holds

Level = tuple[str, str]  # (price, qty) as decimal strings


def _digits(s: str) -> str:
    """A decimal string without its point and leading zeros (Kraken's checksum rule)."""
    return s.replace(".", "").lstrip("0")


def checksum_text(bids: Sequence[Level], asks: Sequence[Level]) -> str:
    """The string whose CRC32 is the checksum: the top ``CHECKSUM_LEVELS`` asks (lowest
    first) then bids (highest first), each level as price then qty, each without its decimal
    point and leading zeros, all concatenated with no separator."""
    parts = [_digits(p) + _digits(q) for p, q in asks[:CHECKSUM_LEVELS]]
    parts += [_digits(p) + _digits(q) for p, q in bids[:CHECKSUM_LEVELS]]
    return "".join(parts)


def checksum(bids: Sequence[Level], asks: Sequence[Level]) -> int:
    """CRC32 (unsigned 32 bit) of ``checksum_text``: what every book message carries."""
    return zlib.crc32(checksum_text(bids, asks).encode("ascii"))


def diff(old: Sequence[Level], new: Sequence[Level]) -> list[Level]:
    """The changes taking one side's levels ``old`` to ``new``: each changed or new level
    with its qty, each level gone with qty ``"0"`` (prices compared as the strings they are)."""
    before = dict(old)
    after = dict(new)
    out = [(p, q) for p, q in new if before.get(p) != q]
    out += [(p, "0") for p, _ in old if p not in after]
    return out


def apply(levels: Sequence[Level], changes: Iterable[Level], descending: bool) -> list[Level]:
    """A client's side of the book after ``changes`` (qty "0" removes a level), best first.
    The gateway's tests and docs example use it; a client does the same."""
    book = dict(levels)
    for p, q in changes:
        if _digits(q) == "":
            book.pop(p, None)
        else:
            book[p] = q
    return sorted(book.items(), key=lambda lv: _key(lv[0]), reverse=descending)


def _key(price: str) -> tuple[int, str]:
    """Sort key of a non-negative decimal string without converting to float."""
    whole, _, frac = price.partition(".")
    return (int(whole or "0"), frac.ljust(32, "0"))


@dataclass
class BookFeed:
    """What the gateway last published of one symbol's book: its levels and seq."""

    symbol: str
    depth: int = DEFAULT_DEPTH
    seq: int | None = None
    shard: int | None = None
    bids: list[Level] = field(default_factory=list)
    asks: list[Level] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        """The message a new (or resyncing) subscriber gets first."""
        return {"channel": "book", "type": "snapshot", "symbol": self.symbol, "seq": self.seq,
                "prev_seq": None, "bids": [list(lv) for lv in self.bids],
                "asks": [list(lv) for lv in self.asks],
                "checksum": checksum(self.bids, self.asks)}  # fmt: skip

    def update(
        self, seq: int, shard: int, bids: Sequence[Level], asks: Sequence[Level]
    ) -> dict[str, Any] | None:
        """Take a book read at ``seq`` of engine shard ``shard``; the message to publish:
        a delta continuing the last one, a snapshot when the pair changed shard (another seq
        space: subscribers replace their book), or None (a read not newer, or no change)."""
        bids, asks = list(bids[: self.depth]), list(asks[: self.depth])
        if self.seq is not None and shard == self.shard:
            if seq <= self.seq:
                return None
            db, da = diff(self.bids, bids), diff(self.asks, asks)
            if not db and not da:
                return None
            prev = self.seq
            self.seq, self.bids, self.asks = seq, bids, asks
            return {"channel": "book", "type": "update", "symbol": self.symbol, "seq": seq,
                    "prev_seq": prev, "bids": [list(lv) for lv in db],
                    "asks": [list(lv) for lv in da],
                    "checksum": checksum(bids, asks)}  # fmt: skip
        self.seq, self.shard, self.bids, self.asks = seq, shard, bids, asks
        return self.snapshot()

"""A moving pair's state as one compressed blob (the mover carries it from source to target).

``pack_state(state) -> bytes``
    msgpack; compressed with zlib at level 1 only when the msgpack is larger than one request
    (``CHUNK``): a book of 10,000 resting orders is ~200 KB of msgpack, which travels as it
    is (zlib cost the source ~5-10 ms and the target ~1-3 ms of the pair's pause for bytes
    that fit anyway), and a much larger book a fraction of its size. Either way the mover
    passes the bytes on without decoding and encoding the book again.
``unpack_state(blob) -> Any``
    The state back, decoded as every command is (``envelope.unpackb``: arrays as tuples),
    from either form (a zlib stream starts with ``0x78``; a state, a msgpack map, never
    does); ``ValueError`` for a blob that is not one (corrupt, or larger than ``MAX_STATE``
    once inflated: a request must not make a shard allocate without bound).

A blob over ``CHUNK`` bytes travels to the target in pieces: ``(OP_ADOPT, symbol, from, at,
piece, offset, total)``, in order; the target keeps them (not journaled: a target restarted
mid-way is sent them again from offset 0) and adopts when the last arrives.

Only the mover's messages carry a blob: the source's ``OP_PAIR`` answer (asked with
``PACKED``) and the target's ``OP_ADOPT``, and a pre-copy's (``shardex.node.precopy``). The
target journals the adoption with the decoded state, so the journal, replay and standbys see
the same command as before.
"""

from __future__ import annotations

import zlib
from typing import Any

from shardex.wire.envelope import packb, unpackb

CHUNK = 512 << 10  # bytes of blob per adoption request (the router's frame limit is 1 MiB)
PACKED = "packed"  # ``(OP_PAIR, symbol, PACKED)``: the hand-off's state as ``state_packed``
MAX_STATE = 256 << 20  # bytes of msgpack a blob may inflate to
_ZLIB = b"\x78"  # the first byte of a zlib stream (the default window)


def pack_state(state: Any) -> bytes:
    """``state`` as msgpack, compressed with zlib (level 1: the pause favours speed) only
    when it is larger than one request."""
    raw = packb(state)
    return raw if len(raw) <= CHUNK else zlib.compress(raw, 1)


def unpack_state(blob: bytes) -> Any:
    """``pack_state``'s inverse; ``ValueError`` for anything else."""
    try:
        if blob[:1] == _ZLIB:
            inflater = zlib.decompressobj()
            raw = inflater.decompress(blob, MAX_STATE)
            if inflater.unconsumed_tail or not inflater.eof:
                raise ValueError("a pair state is truncated or larger than allowed")
        elif len(blob) > MAX_STATE:
            raise ValueError("a pair state is larger than allowed")
        else:
            raw = blob
        return unpackb(raw)
    except (zlib.error, ValueError, TypeError) as exc:
        raise ValueError(f"unreadable pair state ({exc})"[:200]) from None
    except Exception as exc:  # (msgpack's own errors: ExtraData, FormatError, ...)
        raise ValueError(f"unreadable pair state ({type(exc).__name__})") from None


def pieces(blob: bytes) -> list[tuple[int, bytes]]:
    """``blob`` as (offset, piece) of at most ``CHUNK`` bytes, in order."""
    return [(i, blob[i : i + CHUNK]) for i in range(0, len(blob), CHUNK)]

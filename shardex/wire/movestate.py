"""A moving pair's state as one compressed blob (the mover carries it from source to target).

``pack_state(state) -> bytes``
    msgpack, then zlib at level 1: a book of 10,000 resting orders is ~240 KB of msgpack and
    a fraction of that compressed, so the adoption's request stays under the router's frame
    limit (``MAX_FRAME``, 1 MiB) for books many times that size, and the mover passes the
    bytes on without decoding and encoding the book again (the pair's pause is shorter).
``unpack_state(blob) -> Any``
    The state back, decoded as every command is (``envelope.unpackb``: arrays as tuples);
    ``ValueError`` for a blob that is not one (corrupt, or inflating past ``MAX_STATE``:
    a request must not make a shard allocate without bound).

A blob over ``CHUNK`` bytes travels to the target in pieces: ``(OP_ADOPT, symbol, from, at,
piece, offset, total)``, in order; the target keeps them (not journaled: a target restarted
mid-way is sent them again from offset 0) and adopts when the last arrives.

Only the mover's two messages carry the blob: the source's ``OP_PAIR`` answer (asked with
``PACKED``) and the target's ``OP_ADOPT``. The target journals the adoption with the decoded
state, so the journal, replay and standbys see the same command as before.
"""

from __future__ import annotations

import zlib
from typing import Any

from shardex.wire.envelope import packb, unpackb

CHUNK = 512 << 10  # bytes of blob per adoption request (the router's frame limit is 1 MiB)
PACKED = "packed"  # ``(OP_PAIR, symbol, PACKED)``: the hand-off's state as ``state_packed``
MAX_STATE = 256 << 20  # bytes of msgpack a blob may inflate to


def pack_state(state: Any) -> bytes:
    """``state`` as msgpack compressed with zlib (level 1: the pause favours speed)."""
    return zlib.compress(packb(state), 1)


def unpack_state(blob: bytes) -> Any:
    """``pack_state``'s inverse; ``ValueError`` for anything else."""
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(blob, MAX_STATE)
        if inflater.unconsumed_tail or not inflater.eof:
            raise ValueError("a pair state is truncated or larger than allowed")
        return unpackb(raw)
    except (zlib.error, ValueError, TypeError) as exc:
        raise ValueError(f"unreadable pair state ({exc})"[:200]) from None
    except Exception as exc:  # (msgpack's own errors: ExtraData, FormatError, ...)
        raise ValueError(f"unreadable pair state ({type(exc).__name__})") from None


def pieces(blob: bytes) -> list[tuple[int, bytes]]:
    """``blob`` as (offset, piece) of at most ``CHUNK`` bytes, in order."""
    return [(i, blob[i : i + CHUNK]) for i in range(0, len(blob), CHUNK)]

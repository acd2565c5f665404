"""The replication link of one shard's replica pair, packed and unpacked here only (the
protocol: ``shardex.node.replication``). Every message is ``[kind, msgpack body]``:

- standby → leader: ``[SUB, (node, epoch, seq)]`` (hello / resync, also its heartbeat),
  ``[PID, pid]`` (its process id, for ``shardex status``), ``[ACK, (epoch, seq)]``;
- leader → standby: ``[REC, (epoch, seq before, seq after or 0, crc32, payload)]`` (one group
  commit, ``payload`` the msgpack list of its commands) and ``[DIV, leader seq]`` (you hold
  records I do not: start over).

Shapes are checked by the receiver, which refuses and counts anything else."""

from __future__ import annotations

import zlib
from typing import Any

from shardex.wire.protocol import packb, unpackb

SUB, ACK, REC, DIV, PID = b"SUB", b"ACK", b"REC", b"DIV", b"PID"


def encode_body(body: Any) -> bytes:
    """The body frame of any replication message."""
    return packb(body)


def decode_body(body: bytes) -> Any:
    """The body of any replication message; raises on bytes that are not msgpack."""
    return unpackb(body)


def encode_commands(cmds: list[Any]) -> bytes:
    """A group commit's commands: the ``payload`` of its REC (and of journal catch-up)."""
    return packb(cmds)


def decode_commands(payload: bytes) -> Any:
    """A REC's commands (a tuple when well-formed); None when the payload is unreadable."""
    try:
        return unpackb(payload)
    except Exception:
        return None


def rec_body(epoch: int, seq0: int, seq1: int, payload: bytes) -> tuple:
    """The body of a REC: the payload travels with its crc32."""
    return (epoch, seq0, seq1, zlib.crc32(payload), payload)


def rec_fields(msg: Any) -> tuple[int, int, int, int, bytes] | None:
    """``(epoch, seq0, seq1, crc, payload)`` of a decoded REC body, or None when its shape
    is wrong (the crc is checked by the caller, which knows when it matters)."""
    if type(msg) is not tuple or len(msg) != 5:
        return None
    epoch, seq0, seq1, crc, payload = msg
    if not all(type(v) is int for v in (epoch, seq0, seq1, crc)) or type(payload) is not bytes:
        return None
    return epoch, seq0, seq1, crc, payload


def crc_ok(crc: int, payload: bytes) -> bool:
    return zlib.crc32(payload) == crc

"""Server WebSocket text frames built once and written many at a time (pure but the writer).

A server's frames are not masked (RFC 6455 section 5.1), so a message's whole frame, header
and payload, is the same bytes for every client: ``FrameCache`` builds it once per message
(the hub's frames are shared ``str`` objects, whose hash CPython keeps, so a lookup is
cheap), and ``drain_into`` writes every frame a client has queued in one transport write:
one syscall for many frames, instead of ``send_str``'s encode, header and write per frame per
client. Measured with ``bench/gateway.py`` (docs/gateway.md#measured).
"""

from __future__ import annotations

import struct
from typing import Any

from shardex.gateway.outbox import Outbox

FIN_TEXT = 0x81  # FIN + opcode 1 (text), no RSV bits: an uncompressed message
CACHE_FRAMES = 4096  # distinct messages kept built (a heartbeat, the last trades and deltas)
WRITE_MAX = 256  # frames per transport write


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final text frame carrying ``payload``."""
    n = len(payload)
    if n < 126:
        head = bytes((FIN_TEXT, n))
    elif n < 1 << 16:
        head = struct.pack("!BBH", FIN_TEXT, 126, n)
    else:
        head = struct.pack("!BBQ", FIN_TEXT, 127, n)
    return head + payload


class FrameCache:
    """The wire bytes of recent messages (cleared when full: the next use builds again)."""

    def __init__(self, size: int = CACHE_FRAMES) -> None:
        self.size = size
        self.frames: dict[str, bytes] = {}

    def wire(self, msg: str) -> bytes:
        frame = self.frames.get(msg)
        if frame is None:
            if len(self.frames) >= self.size:
                self.frames.clear()
            frame = self.frames[msg] = text_frame(msg.encode())
        return frame


def drain_into(outbox: Outbox, cache: FrameCache, transport: Any) -> int:
    """Write about ``WRITE_MAX`` queued frames in one ``transport.write`` (a step's chunk
    goes whole: its bytes are built once, for every subscriber); the count."""
    parts, n = [], 0
    while n < WRITE_MAX:
        msg = outbox.take()
        if msg is None:
            break
        if isinstance(msg, str):
            parts.append(cache.wire(msg))
            n += 1
        else:
            parts.append(msg.wire)  # type: ignore[attr-defined]
            n += len(msg)
    if parts:
        transport.write(parts[0] if len(parts) == 1 else b"".join(parts))
    return n


def write_all(outbox: Outbox, cache: FrameCache, transport: Any) -> bool:
    """Everything queued in one ``transport.write`` when it is at most ``WRITE_MAX`` frames
    (a write round's common case; each chunk's bytes are the same object for every
    subscriber, only the join is the client's): True; else False and nothing taken
    (``drain_into`` writes it in pieces)."""
    if not outbox.count or outbox.count > WRITE_MAX:
        return False
    parts = [m.wire if m.__class__ is not str else cache.wire(m)  # type: ignore[attr-defined]
             for m in outbox.frames]  # fmt: skip
    outbox.frames.clear()
    outbox.count = 0
    transport.write(parts[0] if len(parts) == 1 else b"".join(parts))
    return True

"""The gateway's prebuilt WebSocket frames: what RFC 6455 says a server's unmasked text frame
is, for each length encoding; one build per message; a client's queue in one write."""

from __future__ import annotations

import struct

from shardex.gateway.outbox import Outbox
from shardex.gateway.wsframe import WRITE_MAX, FrameCache, drain_into, text_frame


def _parse(data: bytes) -> list[str]:
    """Frames read back as a client does (RFC 6455 section 5.2), written from the RFC."""
    out, i = [], 0
    while i < len(data):
        b0, b1 = data[i], data[i + 1]
        assert b0 == 0x81 and not b1 & 0x80  # FIN, text, no RSV bits; a server never masks
        n, i = b1 & 0x7F, i + 2
        if n == 126:
            (n,), i = struct.unpack("!H", data[i:i + 2]), i + 2
        elif n == 127:
            (n,), i = struct.unpack("!Q", data[i:i + 8]), i + 8
        out.append(data[i:i + n].decode())
        i += n
    return out


def test_text_frames_use_the_shortest_length_encoding() -> None:
    for size, head in ((0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)):
        msg = "é" * (size // 2) + "x" * (size % 2)  # (UTF-8: the length is in bytes)
        frame = text_frame(msg.encode())
        assert len(frame) == head + len(msg.encode())
        assert _parse(frame) == [msg]


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)


def test_each_message_is_built_once_and_a_queue_goes_out_in_few_writes() -> None:
    cache, t = FrameCache(size=8), _Transport()
    msgs = [f'{{"seq":{k}}}' for k in range(WRITE_MAX + 5)]
    assert cache.wire(msgs[0]) is cache.wire(msgs[0])  # built once, shared
    box = Outbox(limit=10_000)
    for m in msgs:
        box.offer(m, 0.0)
    assert drain_into(box, cache, t) == WRITE_MAX and drain_into(box, cache, t) == 5
    assert drain_into(box, cache, t) == 0 and len(t.writes) == 2
    assert _parse(b"".join(t.writes)) == msgs  # in order, nothing lost
    assert len(cache.frames) <= 8  # bounded

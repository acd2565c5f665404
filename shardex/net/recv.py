"""Reading one message without blocking, for the node loops' drains: ``recv_frames`` and
``recv_frames_user`` return None when nothing waits instead of raising ``zmq.Again``.

pyzmq's ``recv_multipart`` costs, per message, an ``IntFlag`` operation per frame and a
``getsockopt(RCVMORE)`` through its option enums (measured ~5 µs per 3-frame message on the
2-core box, about as much as libzmq's own receive), and an empty socket answers with an
exception built in Python (``ZMQError.__init__``: ``strerror``, an enum lookup). These call the
backend socket's ``recv``/``get`` with precomputed int flags, as ``wire.transport.send_frames``
does for sending, and read the in-memory twin's sockets (``IN_MEMORY``) through their own
``recv_multipart`` only when something waits, so no exception is raised there at all.

The loops call them only for the sockets their poller reported (``SequencedNode.waiting``),
so the one empty read per drain is the read that ends it.
"""

from __future__ import annotations

from typing import Any

import zmq

from shardex.auth import user_of
from shardex.wire.transport import IN_MEMORY

_recv = zmq.backend.Socket.recv
_get = zmq.backend.Socket.get
_NOBLOCK = int(zmq.NOBLOCK)
_RCVMORE = int(zmq.RCVMORE)
_Again = zmq.Again


def recv_frames(sock: Any) -> list[bytes] | None:
    """The next message on ``sock`` as bytes frames, or None when none waits."""
    if sock.__class__ in IN_MEMORY:
        return sock.recv_multipart(_NOBLOCK) if sock.inbox else None
    try:
        frames = [_recv(sock, _NOBLOCK)]
    except _Again:
        return None
    while _get(sock, _RCVMORE):  # (libzmq delivers a message whole: the rest is there)
        frames.append(_recv(sock, _NOBLOCK))
    return frames


def recv_frames_user(sock: Any) -> tuple[list[bytes], str | None] | None:
    """The next message on ``sock`` and the key id its connection authenticated with (the
    ZAP ``User-Id``, read from the uncopied last frame; None on an insecure connection), or
    None when none waits."""
    if sock.__class__ in IN_MEMORY:
        if not sock.inbox:
            return None
        raw = sock.recv_multipart(_NOBLOCK, copy=False)
        return [f.bytes for f in raw], user_of(raw[-1])
    try:
        last = _recv(sock, _NOBLOCK, copy=False)
    except _Again:
        return None
    frames = [last.bytes]
    while _get(sock, _RCVMORE):
        last = _recv(sock, _NOBLOCK, copy=False)
        frames.append(last.bytes)
    return frames, user_of(last)


def recv_request(sock: Any, secure: bool) -> tuple[list[bytes], str | None] | None:
    """A direct client's request and its key id (``recv_frames_user``) on a secure port; on an
    insecure one, the frames and None (copied frames: no metadata to keep)."""
    if secure:
        return recv_frames_user(sock)
    frames = recv_frames(sock)
    return None if frames is None else (frames, None)


__all__ = ["recv_frames", "recv_frames_user", "recv_request"]

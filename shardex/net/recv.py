"""Reading what waits on a socket in one wake-up, for the node loops' drains, without
``zmq.Again`` as the usual way a drain ends: ``messages``, ``messages_user`` and ``requests``.

pyzmq's ``recv_multipart`` costs, per frame, an ``IntFlag`` operation and a
``getsockopt(RCVMORE)`` through its option enums, and an empty socket answers with an exception
built in Python (``ZMQError.__init__``: ``strerror``, enum lookups), which at a low rate is how
nearly every drain ended. These call the backend socket's ``recv`` with precomputed int flags
(uncopied frames, whose ``more`` says whether another follows), as
``wire.transport.send_frames`` does for sending, and end a drain this way:

* the first read trusts the poll that reported the socket (``reported``); a socket the poll did
  not report (the link a node reads whatever the poll said) is asked first (``ZMQ_EVENTS``);
* after one message, libzmq is asked whether another waits (``ZMQ_EVENTS``: the same command
  processing, one system call, that a failed read does, without the exception), so the
  one-message drain of a low rate ends without one;
* from the second message on, reads go on until one fails: a busy drain pays one exception,
  not an extra system call per message.

The in-memory twin's sockets (``IN_MEMORY``) are read only while their inbox holds something.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import zmq

from shardex.auth import user_of
from shardex.wire.transport import IN_MEMORY

_recv = zmq.backend.Socket.recv
_get = zmq.backend.Socket.get
_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_Again = zmq.Again

Frames = list[bytes]
WithUser = tuple[list[bytes], str | None]


def _copied(sock: Any) -> Frames:
    """The message whose first frame is waiting (raises ``Again`` if none), as bytes. Frames
    are taken uncopied and asked ``more``: cheaper than copied frames and a ``get(RCVMORE)``
    each (which goes through pyzmq's option enums): 1.4 against 3.3 µs per 3-frame message."""
    last = _recv(sock, _NOBLOCK, copy=False)
    frames = [last.bytes]
    while last.more:  # (libzmq delivers a message whole: the rest is there)
        last = _recv(sock, _NOBLOCK, copy=False)
        frames.append(last.bytes)
    return frames


def _with_user(sock: Any) -> WithUser:
    """A message and the key id (ZAP ``User-Id``) from its last frame's metadata."""
    last = _recv(sock, _NOBLOCK, copy=False)
    frames = [last.bytes]
    while last.more:
        last = _recv(sock, _NOBLOCK, copy=False)
        frames.append(last.bytes)
    return frames, user_of(last)


def _mem_copied(sock: Any) -> Frames:
    return sock.recv_multipart(_NOBLOCK)


def _mem_with_user(sock: Any) -> WithUser:
    raw = sock.recv_multipart(_NOBLOCK, copy=False)
    return [f.bytes for f in raw], user_of(raw[-1])


def _drain(sock: Any, limit: int, reported: bool, read: Callable[[Any], Any],
           mem_read: Callable[[Any], Any]) -> Iterator[Any]:  # fmt: skip
    if sock.__class__ in IN_MEMORY:
        inbox = sock.inbox
        for _ in range(limit):
            if not inbox:
                return
            yield mem_read(sock)
        return
    if not reported and not _get(sock, _EVENTS) & _POLLIN:
        return
    for k in range(limit):
        if k == 1 and not _get(sock, _EVENTS) & _POLLIN:
            return  # (one message: the low-rate drain, ended without an exception)
        try:
            msg = read(sock)
        except _Again:
            return
        yield msg


def messages(sock: Any, limit: int, reported: bool = True) -> Iterator[Frames]:
    """Up to ``limit`` messages waiting on ``sock`` now, as bytes frames; ``reported``:
    whether this wake-up's poll reported the socket (else it is asked first)."""
    return _drain(sock, limit, reported, _copied, _mem_copied)


def messages_user(sock: Any, limit: int, reported: bool = True) -> Iterator[WithUser]:
    """As ``messages``, each with the key id its connection authenticated with (None on an
    insecure connection)."""
    return _drain(sock, limit, reported, _with_user, _mem_with_user)


def requests(sock: Any, secure: bool, limit: int) -> Iterator[WithUser]:
    """A poll-reported socket's requests with their key ids on a secure port; on an insecure
    one with None (copied frames: there is no metadata to keep)."""
    if secure:
        return messages_user(sock, limit)
    return ((frames, None) for frames in messages(sock, limit))


__all__ = ["messages", "messages_user", "requests"]

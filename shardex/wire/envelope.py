"""What every shardex message shares: msgpack framing and the protocol version.

The lowest layer of ``shardex.wire``: ``protocol`` (requests, replies, batches) and ``pub``
(the events PUB stream) both build on it, so the version is checked in one place
(``version_error``) whichever envelope is being decoded.
"""

from __future__ import annotations

from typing import Any

import msgpack

VERSION = 1

_packer = msgpack.Packer(use_bin_type=True)
packb = _packer.pack


def unpackb(data: bytes) -> Any:
    """Decode one msgpack frame; arrays become tuples (what the engine expects)."""
    return msgpack.unpackb(data, use_list=False, raw=False, strict_map_key=False)


def _shown(value: Any) -> str:
    """A short, printable rendering of a peer's version field (never a huge repr)."""
    if type(value) is int and -(10**18) < value < 10**18:
        return str(value)
    if isinstance(value, str | bytes):
        return ascii(value[:20])
    return type(value).__name__


def version_error(version: Any, where: str = "") -> str | None:
    """None when ``version`` is the one this side speaks, else the reason to refuse the
    message (``where`` names it, e.g. ``" in reply"``). ``bool`` is not a version."""
    if type(version) is int and version == VERSION:
        return None
    return f"unsupported protocol version {_shown(version)}{where} (this side speaks {VERSION})"

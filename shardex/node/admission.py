"""What both sequenced tiers do first with a request: who sent it, what it says, and whether a
client may send it at all.

Engine shards (``ShardCore``) and account shards (``AccountHandler``) admit a request the same
way, in the same order: the connection's authenticated key id must be in the key registry (a
secure cluster), the payload must decode, and it may hold no internal op (``OP_REJECT``,
``OP_HELLO``, ``OP_FORWARD``: only the cluster's own processes send those, on their links).
Written once so the two tiers cannot drift apart on who gets in.
"""

from __future__ import annotations

from typing import Any

from shardex.auth import KeyInfo, Registry
from shardex.wire.protocol import (
    ERR_UNKNOWN_KEY,
    decode_request,
    encode_reply,
    internal_op_refusal,
)

UNKNOWN_KEY_REPLY = encode_reply(None, ERR_UNKNOWN_KEY)


def admit(
    registry: Registry | None, payload: bytes, user: str | None
) -> tuple[KeyInfo | None, list[Any] | None, bytes | None]:
    """``(key, commands, None)`` for a request to run, else ``(key, None, reply)`` with the
    refusal to send back (``key`` None for an unknown key; always None on an insecure cluster,
    where ``registry`` is None)."""
    key = None
    if registry is not None:
        key = registry.lookup(user)
        if key is None:
            return None, None, UNKNOWN_KEY_REPLY
    cmds, error = decode_request(payload)
    if error is None:
        error = internal_op_refusal(cmds)
    if error is not None:
        return key, None, encode_reply(None, error)
    return key, cmds, None

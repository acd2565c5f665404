"""The messages a sequenced node exchanges with its routers and its other-tier peers, packed
and unpacked here only (their layouts: ``wire.protocol``'s comments on the router link and the
account link).

- HELLO: a node's registration with each router, ``(OP_HELLO, info map)``, sent every second
  on ``["", "HELLO", hello]`` and once on ``["", NOT_LEADER, hello]`` by a fenced leader.
- Link messages of the engine ⇄ account link: ``[kind, (sender shard, body)]`` with kind
  ``LINK_FWD`` / ``LINK_SYNC`` (account → engine shard) or ``LINK_SETTLE`` / ``LINK_HAVE``
  (engine → account shard).
"""

from __future__ import annotations

from typing import Any

from shardex.wire.protocol import OP_HELLO, packb, unpackb


def encode_hello(info: dict[str, Any]) -> bytes:
    """A node's HELLO: ``info`` holds at least ``shard`` and ``shards`` (``tier`` for an
    account shard; ``epoch``, ``role``, ``node`` for a replicated leader)."""
    return packb((OP_HELLO, info))


def encode_link(sender: int, body: Any) -> bytes:
    """One link message's payload: the sender's shard index and the body (a list of
    forwards or settlements, or one seq for SYNC / HAVE)."""
    return packb((sender, body))


def decode_link(payload: bytes) -> tuple[Any, Any]:
    """``(sender, body)`` of a link message's payload; raises on anything else (the caller
    counts it malformed). The sender and the body are not checked here."""
    sender, body = unpackb(payload)
    return sender, body

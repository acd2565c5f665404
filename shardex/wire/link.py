"""The messages a sequenced node exchanges with its routers and its other-tier peers, packed
and unpacked here only (their layouts: ``wire.protocol``'s comments on the router link and the
account link).

- HELLO: a node's registration with each router, ``(OP_HELLO, info map)``, sent every second
  on ``["", "HELLO", hello]`` and once on ``["", NOT_LEADER, hello]`` by a fenced leader.
- Link messages of the engine ⇄ account link: ``[kind, (sender shard, body, epoch)]`` with
  kind ``LINK_FWD`` / ``LINK_SYNC`` (account → engine shard), ``LINK_SETTLE`` / ``LINK_HAVE``
  (engine → account shard) or ``LINK_MARK`` (both ways). ``epoch``: the sending leader's lease
  epoch, so the receiver can refuse a deposed leader's late messages (``accounts.link.EpochFence``);
  at epoch 0 (no replicas) the message is the older ``(sender shard, body)``, which decodes
  as epoch 0 (what mixing versions means: docs/account-link.md).
"""

from __future__ import annotations

from typing import Any

from shardex.wire.protocol import OP_HELLO, packb, unpackb


def encode_hello(info: dict[str, Any]) -> bytes:
    """A node's HELLO: ``info`` holds at least ``shard`` and ``shards`` (``tier`` for an
    account shard; ``epoch``, ``role``, ``node`` for a replicated leader)."""
    return packb((OP_HELLO, info))


def encode_link(sender: int, body: Any, epoch: int = 0) -> bytes:
    """One link message's payload: the sender's shard index, the body (a list of forwards
    or settlements, or one seq for SYNC / HAVE) and the sender's lease epoch (0: not
    replicated, sent as the older 2-tuple that every version reads)."""
    return packb((sender, body, epoch) if epoch else (sender, body))


def decode_link(payload: bytes) -> tuple[Any, Any, Any]:
    """``(sender, body, epoch)`` of a link message's payload (a 2-tuple, from an unreplicated
    sender or an older version: epoch 0); raises on anything else (the caller counts it
    malformed). The sender, the body and the epoch are not checked here."""
    msg = unpackb(payload)
    if len(msg) == 2:
        return msg[0], msg[1], 0
    sender, body, epoch = msg
    return sender, body, epoch

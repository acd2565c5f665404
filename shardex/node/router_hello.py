"""The checks a shard's HELLO passes before the router lets it serve a slot (``Router.hello``):
which slot it names, whether its epoch may lead, whether the link or key may register it.
Split from ``router_core`` so the routing decisions stay one screenful each; the state read
(``shards``, ``accounts``, ``epochs``, ``identities``, ``registry``) is the ``Router``'s."""

from __future__ import annotations

import logging
from typing import Any

from shardex.auth import Registry
from shardex.node.router_report import _slot_name
from shardex.recovery import RECOVERING_ID
from shardex.wire.protocol import OP_HELLO, unpackb

log = logging.getLogger("shardex.router")


class HelloChecks:
    """Mixin of ``Router``: a hello's slot, epoch and sender checks (each logs its refusal)."""

    shards: int
    accounts: int
    epochs: dict[int, int]
    stale_epochs: set[tuple[int, int]]
    identities: list[bytes]
    registry: Registry | None

    def _hello_slot(
        self, sender: bytes, payload: bytes
    ) -> tuple[int, int, str, dict[str, Any]] | None:
        """A hello's (slot, index within its tier, key role, info), or None (logged) when it
        is malformed or names no slot of this router."""
        try:
            op, info = unpackb(payload)
            i = info["shard"]
            n = info["shards"]
            if type(i) is not int or type(n) is not int or type(info) is not dict:
                raise TypeError
        except Exception:
            log.warning("ignoring malformed hello from %r", sender[:32])
            return None
        tier = info.get("tier")
        role, j = "shard", i
        if tier == "accounts":  # account shard j of M: slot N + j
            if op != OP_HELLO or n != self.accounts or not 0 <= i < self.accounts:
                log.error("account shard hello j=%s of M=%s does not match this router (M=%d)",
                          i, n, self.accounts)  # fmt: skip
                return None
            j, i, role = i, self.shards + i, "accounts"
        elif op != OP_HELLO or not self._engine_slot_ok(i, n, info):
            log.error(
                "shard hello with shards=%s index=%s does not match this router "
                "(%d shards): ignoring it",
                n,
                i,
                self.shards,
            )
            return None
        return i, j, role, info

    def learn_placement(self, wire: Any, slot: int) -> bool:
        """(``Router``'s: takes a newer map, resizing the engine slots to its count.)"""
        raise NotImplementedError

    def _engine_slot_ok(self, i: int, n: int, info: dict[str, Any]) -> bool:
        """Whether engine shard ``i`` of ``n`` (as it was started) names a slot. With the
        account tier the count is fixed: ``n``, or the count of the map the shard routes by (a
        shard started before ``shardex reshard`` grew the tier, which restarts the routers),
        must be this router's. Without it the slots follow the newest placement map
        (``router_resize``): a shard started before a count change still says its old ``n``,
        and a new shard's HELLO carries the map that adds its slot."""
        if self.accounts:
            placed = info.get("placement")
            mapped = isinstance(placed, dict) and placed.get("shards") == self.shards
            return (n == self.shards or mapped) and 0 <= i < self.shards
        if not 0 <= i < n:
            return False
        if i >= self.shards and "placement" in info:
            self.learn_placement(info["placement"], i)
        return i < self.shards

    def _hello_epoch_ok(self, i: int, epoch: Any, info: dict[str, Any]) -> bool:
        """False (logged) for a malformed epoch or one older than slot ``i``'s leader's."""
        if epoch is not None and (type(epoch) is not int or epoch < 1):
            log.warning("ignoring hello of %s with a bad epoch %r", _slot_name(i, self.shards),
                        epoch)  # fmt: skip
            return False
        if epoch is not None and epoch < self.epochs.get(i, 0):
            if (i, epoch) not in self.stale_epochs:  # logged once per deposed epoch
                self.stale_epochs.add((i, epoch))
                log.error("ALERT ignoring %s's hello of epoch %d (pid %s): epoch %d leads",
                          _slot_name(i, self.shards), epoch, info.get("pid"),
                          self.epochs[i])  # fmt: skip
            return False
        return True

    def _hello_sender_ok(
        self, i: int, j: int, role: str, epoch: Any, beacon: bool, sender: bytes,
        user: str | None,
    ) -> bool:  # fmt: skip
        """Whether slot ``i`` may be registered by ``sender``: insecure, the link must bear the
        slot's name (with its epoch; the recovery beacon's own prefix); secure, the
        connection's key must have been issued for that slot. False is logged."""
        expected = self.identities[i]
        if epoch is not None:  # a replicated leader's link is named after its epoch
            expected += f".e{epoch}".encode()
        if beacon:  # the recovery beacon's own connection
            expected = RECOVERING_ID + self.identities[i]
        if self.registry is None and sender != expected:
            log.error("hello for %s from identity %r: ignoring it", _slot_name(i, self.shards),
                      sender[:32])  # fmt: skip
            return False
        if self.registry is not None:
            key = self.registry.lookup(user)
            if key is None or key.role != role or key.shard != (j if role == "accounts" else i):
                log.error(
                    "ALERT refused a registration as %s from a key not issued for it (%s)",
                    _slot_name(i, self.shards),
                    "unknown key" if key is None else f"{key.role} key {key.name!r}",
                )
                return False
        return True

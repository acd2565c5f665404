"""The coordination contract every store implements (Redis, etcd), and the holder it reports.

A lease store is the shared state of ONE lease (one replicated shard). ``Lease``
(``shardex.lease``) keeps the timing (local deadline, renew period, renewer thread) and asks
the store only these atomic steps, so the safety argument in ``shardex.lease`` holds for any
store that keeps them:

- ``acquire``: take the lease if nobody holds it and the taker is in the in-sync set (or no
  set is recorded); the new epoch is greater than every epoch granted before AND than the
  taker's ``floor``; record the in-sync set as just the taker and the epoch's start seq.
  Returns (epoch, "ok", token) or (0, why not, None). The store expires the lease no earlier
  than ``ttl_ms`` after it ran the step.
- ``renew(token)``: extend the lease by ``ttl_ms`` from now only if ``token`` still holds it
  (True), False when someone else (or nobody) does; raises when the store cannot be asked.
- ``set_isr(token, members)``: record the in-sync set only while ``token`` holds the lease.
- ``release(token)``: give the lease up if ``token`` holds it.
- ``holder_ttl``: the holder and the milliseconds before the store can expire it (-1: no ttl,
  -2: no holder); ``isr``; ``starts``: epoch -> the seq its leader started from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: its epoch (fencing token), node id and replication endpoint."""

    epoch: int
    node: str
    endpoint: str


def parse_holder(value: Any) -> Holder | None:
    """A lease value ``"epoch|node|endpoint"`` -> its holder (None: missing or garbled)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    parts = str(value).split("|", 2)
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    return Holder(int(parts[0]), parts[1], parts[2])


class LeaseStore(Protocol):
    """The atomic steps of one lease (see the module docstring for each one's contract)."""

    def effective_ttl_ms(self, ttl_ms: int) -> int: ...

    def acquire(self, node: str, endpoint: str, ttl_ms: int, floor: int,
                start_seq: int) -> tuple[int, str, Any]: ...  # fmt: skip

    def renew(self, token: Any, ttl_ms: int) -> bool: ...

    def set_isr(self, token: Any, members: list[str]) -> bool: ...

    def release(self, token: Any) -> None: ...

    def holder(self) -> Holder | None: ...

    def holder_ttl(self) -> tuple[Holder | None, int]: ...

    def isr(self) -> list[str]: ...

    def starts(self) -> dict[int, int]: ...

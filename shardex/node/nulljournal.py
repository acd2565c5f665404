"""The journal of a node that runs without one (no ``--data-dir``)."""

from __future__ import annotations

from typing import Any

from shardex.engine.codes import Event


class NullJournal:
    """The journal of an ephemeral shard: accepts everything, keeps nothing (no ``None`` checks
    on the hot path, and the same code path with and without durability)."""

    fsync = "none"
    pending = 0
    records_written = 0
    last_write_s = 0.0
    last_fsync_s = 0.0
    durable = False

    def add(self, seq_before: int, cmd: Any) -> None:
        pass

    def commit(self) -> None:
        pass

    def events(self, first: int, last: int, budget: int | None = None) -> list[Event] | None:
        return None

    def snapshot(self, engine: Any) -> Any:
        return None

    def close(self) -> None:
        pass

"""``shardex replay``: JSON-lines commands (or a shard's journal) through one engine → events.

Deterministic: the same input always gives the same events, byte for byte. A malformed line
becomes a ``rejected`` event naming its line number, and replay goes on.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from shardex.engine import Engine, Market
from shardex.engine.codes import EV_REJECTED, EV_TRADE, Command
from shardex.journal import JournalError, read_commands
from shardex.wire.protocol import command_from_json_line, event_to_json_line


@dataclass
class ReplaySummary:
    commands: int = 0
    events: int = 0
    trades: int = 0
    rejects: Counter[str] = field(default_factory=Counter)  # by reason, without "line N: "

    def lines(self) -> list[str]:
        """What ``--summary`` prints: totals, then each reject reason by count."""
        head = (
            f"commands {self.commands}  events {self.events}  trades {self.trades}  "
            f"rejects {sum(self.rejects.values())}"
        )
        return [head] + [f"  {n:>8}  {reason}" for reason, n in self.rejects.most_common()]


def json_commands(source: BinaryIO, markets: Mapping[str, Market]) -> Iterator[Command]:
    """Engine commands from JSON lines (blank lines skipped; bad ones become rejects)."""
    for lineno, raw in enumerate(source, 1):
        if raw.strip():
            yield command_from_json_line(raw, markets, f"line {lineno}: ")


def journal_commands(directory: str) -> Iterator[Command]:
    """Every command still on disk in a shard's journal directory, oldest first."""
    if not os.path.isdir(directory):
        raise JournalError(f"{directory} is not a journal directory")
    for _, cmd in read_commands(directory):
        yield cmd


def replay(
    commands: Iterable[Command], markets: Mapping[str, Market], write: Callable[[str], object]
) -> ReplaySummary:
    """Apply ``commands`` to a fresh engine; ``write`` each event as a JSON line."""
    engine = Engine(markets)
    summary = ReplaySummary()
    out: list = []
    apply = engine.apply
    for cmd in commands:
        summary.commands += 1
        out.clear()
        apply(cmd, out)
        for ev in out:
            if ev[0] == EV_TRADE:
                summary.trades += 1
            elif ev[0] == EV_REJECTED:
                reason = ev[4].split(": ", 1)[1] if ev[4].startswith("line ") else ev[4]
                summary.rejects[reason] += 1
            write(event_to_json_line(ev, markets))
            write("\n")
    summary.events = engine.seq
    return summary

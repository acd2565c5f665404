"""``shardex replay``: JSON-lines commands (or a shard's journal) through one engine → events.

Deterministic: the same input always gives the same events, byte for byte. A malformed line
becomes a ``rejected`` event naming its line number, and replay goes on.

A journal is replayed by the machine its shard recovers with (``tools.journals``): an engine
shard's with the account tier understands the forwarded orders, an account shard's gives its
balance, forward, reject... events (``account_event_to_json``). Replay starts from a fresh
machine when the journal still holds its first record, else from the oldest snapshot the
records continue; a record that does not continue the replay, or damage, stops it with an
error (what was printed up to there is right). Events replayed from a journal carry their
exchange time (``"ts"``, journaled with each batch: ``shardex.timemarks``; 0 for records
written before exchange time existed); JSON-lines input has none.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from shardex.accounts.assets import AssetTable
from shardex.engine import Engine, Market
from shardex.engine.codes import EV_REJECTED, EV_TRADE, Command
from shardex.journal import (
    JournalError,
    SegmentScan,
    iter_records,
    read_snapshot,
    restore_engine,
)
from shardex.timemarks import is_time_command
from shardex.tools.journals import JournalKind, journal_kind
from shardex.wire.account_events import account_event_to_json
from shardex.wire.layouts import EV_KIND, REJECTED_REASON
from shardex.wire.protocol import (
    command_from_json_line,
    event_to_json_line,
    unpackb,
)


@dataclass
class ReplaySummary:
    commands: int = 0
    events: int = 0
    trades: int = 0
    rejects: Counter[str] = field(default_factory=Counter)  # by reason, without "line N: "
    kinds: Counter[str] = field(default_factory=Counter)  # events by kind (journal replays)
    journal: str | None = None  # what wrote the replayed journal, and from which seq

    def lines(self) -> list[str]:
        """What ``--summary`` prints: totals, then each reject reason by count."""
        head = (
            f"commands {self.commands}  events {self.events}  trades {self.trades}  "
            f"rejects {sum(self.rejects.values())}"
        )
        kinds = "  ".join(f"{k} {n}" for k, n in sorted(self.kinds.items()))
        return (
            ([f"journal: {self.journal}"] if self.journal else [])
            + [head]
            + ([f"  events by kind: {kinds}"] if kinds else [])
            + [f"  {n:>8}  {reason}" for reason, n in self.rejects.most_common()]
        )


def json_commands(source: BinaryIO, markets: Mapping[str, Market]) -> Iterator[Command]:
    """Engine commands from JSON lines (blank lines skipped; bad ones become rejects)."""
    for lineno, raw in enumerate(source, 1):
        if raw.strip():
            yield command_from_json_line(raw, markets, f"line {lineno}: ")


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
            kind = ev[EV_KIND]
            if kind == EV_TRADE:
                summary.trades += 1
            elif kind == EV_REJECTED:
                reason = ev[REJECTED_REASON]
                if reason.startswith("line "):
                    reason = reason.split(": ", 1)[1]
                summary.rejects[reason] += 1
            write(event_to_json_line(ev, markets))
            write("\n")
    summary.events = engine.seq
    return summary


def _base(
    directory: Path, markets: Mapping[str, Market], kind: JournalKind, schedule: Any = None
) -> Any:
    """The machine replay starts from: fresh when the journal holds its first record (seq 0),
    else the oldest valid snapshot the records reach (older events are gone from the disk)."""
    factory = kind.machine(schedule)
    segments = sorted(directory.glob("journal-*.log"))
    first = next((s for seg in segments for s, _ in iter_records(seg)), 0)
    if first == 0:
        return factory.new(markets)
    for path in sorted(directory.glob("snapshot-*.snap")):
        state = read_snapshot(path)
        if state is not None and state["seq"] >= first:
            return restore_engine(state, markets, factory)
    raise JournalError(
        f"{directory}: the oldest record still on disk follows seq {first} and no snapshot "
        "continues it: the events before are gone, and the records cannot be replayed"
    )


def replay_journal(
    directory: str | Path, markets: Mapping[str, Market], write: Callable[[str], object],
    schedule: Any = None,
) -> ReplaySummary:  # fmt: skip
    """Replay a journal directory as its shard does (an account shard with its fee
    ``schedule``); ``write`` each event as a JSON line (see the module docstring). Raises
    JournalError on damage or records that do not continue."""
    d = Path(directory)
    kind = journal_kind(d)
    machine = _base(d, markets, kind, schedule)
    summary = ReplaySummary(journal=f"{kind.describe()}; events from seq {machine.seq + 1}")
    assets = AssetTable(markets) if kind.role == "accounts" else None
    trades: set[str] = set()
    out: list = []
    for path in sorted(d.glob("journal-*.log")):
        scan = SegmentScan(path)
        for seq, payload in iter_records(path, scan):
            if seq < machine.seq:
                continue  # covered by the snapshot replay started from
            if seq != machine.seq:
                raise JournalError(
                    f"{path}: record with seq {seq} but the replay is at {machine.seq} "
                    "(records missing, or a file of another journal)"
                )
            for cmd in unpackb(payload):
                out.clear()
                machine.apply(cmd, out)
                if is_time_command(cmd):
                    continue  # (the batch's exchange time: no event, not a client's command)
                summary.commands += 1
                if kind.settled:
                    machine.outgoing.clear()  # settlements: what the shard sent, not events
                ts = machine.ts  # every event carries its exchange time
                for ev in out:
                    if assets is None:
                        _count_engine(summary, ev)
                        write(event_to_json_line(ev, markets, ts))
                    else:
                        obj = account_event_to_json(ev, assets, markets, ts)
                        summary.kinds[obj["ev"]] += 1
                        if obj["ev"] == "rejected":
                            summary.rejects[obj["reason"]] += 1
                        elif obj["ev"] == "balance" and obj["why"] == "trade":
                            trades.add(obj["ref"])
                        write(json.dumps(obj, separators=(",", ":")))
                    write("\n")
                    summary.events += 1
        if scan.damage:
            raise JournalError(f"journal damaged: {scan.damage}; replay stops there")
    summary.trades = summary.trades if assets is None else len(trades)
    return summary


def _count_engine(summary: ReplaySummary, ev: tuple) -> None:
    kind = ev[EV_KIND]
    if kind == EV_TRADE:
        summary.trades += 1
    elif kind == EV_REJECTED:
        summary.rejects[ev[REJECTED_REASON]] += 1

"""Which journal a directory holds, and the machine its shard replays it with.

A cluster writes three kinds of journal, and only the machine the shard itself recovers with
reproduces its events:

* ``shard-I`` without the account tier: engine commands, replayed by the ``Engine``;
* ``shard-I`` with the account tier (the default): engine commands plus what account shard
  ``j`` forwarded, ``(OP_FORWARD, j, seq, prev, cmd)``, replayed by ``SettledEngine`` (which
  needs I, the account shard count M and the engine shard count N: a forward is refused by
  the same checks as live);
* ``accounts-J``: deposits, withdrawals, orders and settlements, replayed by
  ``AccountMachine`` (J, M, and N for the symbol → engine shard routing of its forwards).

The kind, I/J, M and N come from the directory's name and its data directory's records
(``accounts.json``: M; ``shards.json``: N when present, else the ``shard-I`` directories there),
or from the newest snapshot for a journal kept elsewhere. What cannot be told is an error that
says so: replaying with a guessed machine gives wrong events (as the engine-only tools did:
every forward an ``unknown_op``, every deposit ``malformed``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardex.accounts.machines import AccountMachineFactory, SettledEngineFactory
from shardex.datadir import SHARDS_FILE, TIER_FILE, DataDirError, recorded_shards, recorded_tier
from shardex.engine import Market
from shardex.journal import (
    ENGINE,
    JournalError,
    Machine,
    inspect,
    iter_records,
    read_snapshot,
)
from shardex.placement.core import PlacementMap, initial
from shardex.placement.load import PlacementError, map_for
from shardex.wire.layouts import CMD_OP
from shardex.wire.protocol import OP_FORWARD, unpackb

_DIR = re.compile(r"^(shard|accounts)-(\d+)(?:\.r\d+)?$")
_SHARD_DIR = re.compile(r"^shard-(\d+)$")


@dataclass(frozen=True)
class JournalKind:
    """What wrote a journal: ``role`` "engine" or "accounts", its ``index``, the account
    shard count ``accounts`` (M, 0: no account tier) and engine shard count ``engines`` (N,
    None where it does not matter), and where those came from (``source``)."""

    role: str
    index: int | None
    accounts: int
    engines: int | None
    source: str
    placement: PlacementMap | None = None  # the data dir's map (None: the map without pins)

    @property
    def settled(self) -> bool:
        """An engine shard journal written with the account tier on."""
        return self.role == "engine" and self.accounts > 0

    def machine(self) -> Machine | Any:
        """The ``journal.Machine`` factory the shard recovers this journal with."""
        if self.role == "accounts":
            owner = (self.placement or initial(self.engines or 1)).owner
            return AccountMachineFactory(self.index or 0, self.accounts, owner,
                                         engines=self.engines)  # fmt: skip
        if self.accounts:
            owner_of = self.placement.owner if self.placement is not None else None
            return SettledEngineFactory(self.index or 0, self.accounts, self.engines, owner_of)
        return ENGINE

    def describe(self) -> str:
        if self.role == "accounts":
            what = (
                f"account shard {self.index} of {self.accounts} "
                f"(forwarding to {self.engines} engine shard(s))"
            )
        elif self.accounts:
            what = (
                f"engine shard {self.index} of {self.engines} with the account tier "
                f"({self.accounts} account shard(s))"
            )
        else:
            what = "engine shard" + (f" {self.index}" if self.index is not None else "")
        return f"{what}; {self.source}"


def _recorded(read: Callable[[Path], int | None], root: Path) -> int | None:
    """M or N as the data directory records it (``shardex.datadir`` owns those files)."""
    try:
        return read(root)
    except DataDirError as exc:
        raise JournalError(str(exc)) from None


def _engines_of(root: Path) -> tuple[int | None, str]:
    """N for a data directory: its record, else how many ``shard-I`` directories it has."""
    recorded = _recorded(recorded_shards, root)
    if recorded:
        return recorded, f"N={recorded} from {SHARDS_FILE}"
    found = [int(m.group(1)) for p in root.iterdir() if (m := _SHARD_DIR.match(p.name))]
    if not found:
        return None, "N unknown"
    return max(found) + 1, f"N={max(found) + 1} from the shard-I directories"


def _newest_state(directory: Path) -> Mapping[str, Any] | None:
    for path in sorted(directory.glob("snapshot-*.snap"), reverse=True):
        state = read_snapshot(path)
        if isinstance(state, Mapping):
            return state
    return None


def _has_forwards(directory: Path) -> bool:
    """Whether any journaled command is a forward from an account shard (op 40)."""
    for seg in sorted(directory.glob("journal-*.log")):
        for _, payload in iter_records(seg):
            for cmd in unpackb(payload):
                if type(cmd) is tuple and cmd and cmd[CMD_OP] == OP_FORWARD:
                    return True
    return False


def journal_kind(directory: str | Path) -> JournalKind:
    """What wrote the journal in ``directory`` (see the module docstring); JournalError when
    that cannot be told."""
    d = Path(directory)
    if not d.is_dir():
        raise JournalError(f"{d} is not a directory")
    m = _DIR.match(d.name)
    root = d.resolve().parent
    tier = _recorded(recorded_tier, root) if m else None
    state = _newest_state(d)
    if m and m.group(1) == "accounts" or state is not None and "balances" in state:
        return _account_kind(d, m, root, tier, state)
    index = int(m.group(2)) if m else None
    if tier is None and state is not None and isinstance(state.get("settlement"), Mapping):
        tier = int(state["settlement"]["feed"]["shards"])
        where = f"M={tier} from its snapshot"
    elif tier is not None:
        where = f"M={tier} from {root / TIER_FILE}"
    else:
        where = "no account tier recorded"
    if not tier:
        if tier is None and _has_forwards(d):  # (a recorded 0 is trusted: no full read)
            raise JournalError(
                f"{d} holds orders forwarded by account shards, but nothing says how many "
                f"account shards the cluster had ({TIER_FILE} of its data directory): "
                "read it where the cluster wrote it (DATA_DIR/shard-I)"
            )
        return JournalKind("engine", index, 0, None, where)
    if index is None:
        raise JournalError(
            f"{d} is an engine shard journal written with the account tier, but its name does "
            "not say which shard: read it as DATA_DIR/shard-I"
        )
    engines, n_from = _engines_of(root)
    return JournalKind("engine", index, tier, engines, f"{where}, {n_from}",
                       _placement(root, engines))  # fmt: skip


def _account_kind(
    d: Path,
    m: re.Match[str] | None,
    root: Path,
    tier: int | None,
    state: Mapping[str, Any] | None,
) -> JournalKind:
    index = int(m.group(2)) if m else None
    where = f"M={tier} from {root / TIER_FILE}" if tier else ""
    if state is not None:
        index = int(state["shard"]) if index is None else index
        if not tier:
            tier, where = int(state["shards"]), "M from its snapshot"
    if not tier or index is None:
        raise JournalError(
            f"{d} is an account shard journal, but nothing says how many account shards the "
            f"cluster had ({TIER_FILE} of its data directory): read it as DATA_DIR/accounts-J"
        )
    engines, n_from = _engines_of(root) if m else (None, "N unknown")
    if state is not None and type(state.get("engines")) is int:
        engines, n_from = state["engines"], "N from its snapshot"
    if engines is None:
        raise JournalError(
            f"{d} is an account shard journal, but nothing says how many engine shards its "
            "orders were forwarded to: read it inside its data directory (with its shard-I "
            "directories)"
        )
    return JournalKind("accounts", index, tier, engines, f"{where}, {n_from}",
                       _placement(root, engines))  # fmt: skip


def _placement(root: Path, engines: int | None) -> PlacementMap | None:
    """The placement map the cluster in ``root`` routed by (None: none stored, or unreadable:
    the map without pins)."""
    try:
        return map_for(root, engines) if engines else None
    except PlacementError:
        return None


def machine_checks(kind: JournalKind) -> Any:
    """``check(machine)`` for ``journal.inspect``: what a replayed state says is wrong (the
    alerts the shard itself raises on the same records)."""

    def check(machine: Any) -> list[str]:
        found: list[str] = []
        if kind.role == "accounts":
            core = machine.core
            if core.anomalies:
                found.append(
                    f"{core.anomalies} settlement(s) that do not fit the account state (anomaly)"
                )
            try:
                core.check_integrity()
            except Exception as exc:  # IntegrityError, or a state too broken to check
                found.append(f"balances do not add up: {exc}")
        elif kind.settled:
            if machine.anomalies:
                found.append(f"{machine.anomalies} event(s) about orders the tier never saw")
            if machine.refusals:
                found.append(
                    f"{machine.refusals} forward(s) refused before the engine (the tiers' "
                    "--accounts/--shards differed when they were written)"
                )
        return found

    return check


def inspect_journal(directory: str | Path, markets: Mapping[str, Market]) -> dict[str, Any]:
    """``journal.inspect`` with the machine the journal's shard recovers with, plus ``kind``
    (what wrote it) and ``problems``: every finding that is wrong (damage, what recovery would
    refuse, a damaged snapshot, state that does not add up), each one line. A torn tail at the
    end is not one: recovery cuts it (a crash mid-write)."""
    kind = journal_kind(directory)
    info = inspect(directory, markets, kind.machine(), machine_checks(kind))
    problems = []
    seq_error = info["seq_error"]
    for seg in info["segments"]:
        if seg["damage"] and not (seq_error and seg["damage"] in seq_error):
            problems.append(f"damage: {seg['damage']}")
    if seq_error:
        problems.append(f"recovery would refuse to start: {seq_error}")
    for snap in info["snapshots"]:
        if not snap["valid"]:
            problems.append(f"{snap['file']} is damaged (recovery falls back to an older one)")
    problems += info["checks"]
    info["kind"] = kind.describe()
    info["problems"] = problems
    return info

"""Shard-count safety for a data directory: which pairs each ``shard-K`` directory holds, and
the placement map under which a cluster of N shards finds every pair where its journal is.

A shard only recovers its own ``shard-I`` directory, so a pair routed to another shard than the
one whose journal holds it would silently start empty there. ``shardex up``, ``engine``,
``accounts`` and ``router`` call :func:`check_shard_count` before starting: it rebuilds the
placement map from what the directories hold (``shardex.placement.load.settle``: each pair
pinned where its journal is, so any N that reads every directory holding pairs may start)
and records N (``SHARDS_FILE``); with the account tier's data, whose forward chains are per
engine shard, any other N is refused (a directory without the record is scanned,
:func:`scan_account_dir`).

What a directory "holds" is what recovery would rebuild: the books of the newest valid snapshot
plus the pairs of the commands journaled after it (a new/cancel/amend, cancel-all or market rule
of a known symbol creates its book, as in the engine; with the account tier, the command inside
a forwarded record).
Only snapshots and records after the newest snapshot are read, so the cost is one snapshot
decode plus at most ``--snapshot-every`` commands, not the whole history. Everything is read
through ``shardex.journal``'s public functions and nothing is written.

:class:`Misplaced` is a mover's work list (pair, directory it is in, shard it belongs to).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from shardex.accounts.codes import A_AMEND, A_NEW
from shardex.engine.codes import OP_AMEND, OP_CANCEL, OP_CANCEL_ALL, OP_MARKET_RULE, OP_NEW
from shardex.journal import (
    Journal,
    JournalError,
    iter_records,
    read_snapshot,
    snapshot_books,
    uncovered,
)
from shardex.journal.pairmoves import has_move, moved
from shardex.journal.snapshots import snapshot_moved
from shardex.layout import MAX_SHARDS
from shardex.placement.load import PlacementError, settle, settled
from shardex.wire.layouts import CMD_OP, CMD_SYMBOL, FWD_RECORD_CMD, FWD_RECORD_WIDTH, LINK_CMD
from shardex.wire.protocol import OP_FORWARD, packb, shard_for, unpackb

log = logging.getLogger("shardex.datadir")
LOG_BYTES = 16 << 20  # a directory with this much journal to read says so first

_SHARD_DIR = re.compile(r"^shard-(\d+)$")
# commands that create their (known) pair's book in the engine: a pair's rules and a dead-man
# switch are state of its book too, lost if the pair started on another shard
_BOOK_OPS = frozenset((OP_NEW, OP_CANCEL, OP_AMEND, OP_CANCEL_ALL, OP_MARKET_RULE))


class DataDirError(Exception):
    """The data directory does not fit the shard count; the message says what and how to go on."""


@dataclass
class ShardDir:
    """What one ``shard-K`` directory holds."""

    index: int
    path: Path
    pairs: set[str] = field(default_factory=set)
    snapshot_seq: int | None = None
    records: int = 0  # journal records read after the snapshot
    forwarded: bool = False  # holds orders the account tier forwarded (seen after the snapshot)


@dataclass(frozen=True)
class Misplaced:
    """A pair stored in ``directory`` (shard ``found_in``) that N shards would give to ``owner``."""

    symbol: str
    found_in: int
    owner: int
    directory: Path


def shard_dirs(data_dir: str | Path) -> list[Path]:
    """The ``shard-K`` subdirectories of ``data_dir`` (any K), by index."""
    root = Path(data_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _SHARD_DIR.match(p.name))]
    return [p for _, p in sorted(found) if p.is_dir()]


def scan_shard_dir(path: str | Path, known: Collection[str]) -> ShardDir:
    """The pairs ``path`` holds: the newest valid snapshot's books plus the pairs of the records
    after it. ``known`` are the market symbols: a journaled command for an unknown symbol was a
    reject and created no book, so it holds nothing (and must not block a shard-count change)."""
    path = Path(path)
    m = _SHARD_DIR.match(path.name)
    info = ShardDir(int(m.group(1)) if m else -1, path)
    journal = Journal(path, {})  # read-only use: snapshots() and segments() only list files
    snap_seq = 0
    gone: set[str] = set()  # pairs handed off (a live move): their later commands hold no book
    for snap in reversed(journal.snapshots()):
        books = snapshot_books(snap)
        if books is not None:
            snap_seq, symbols = books
            info.pairs.update(symbols)
            info.snapshot_seq = snap_seq
            gone = snapshot_moved(snap)
            break
    segments = uncovered(journal.segments(), snap_seq) if snap_seq else journal.segments()
    size = sum(p.stat().st_size for p in segments)
    if size >= LOG_BYTES:
        log.info("data dir check: reading %.0f MB of %s's journal after its snapshot (seq %d)",
                 size / 1e6, path.name, snap_seq)  # fmt: skip
    wanted = {s: packb(s) for s in known}  # a symbol's bytes as a command would hold them
    for seg in segments:
        for seq, payload in iter_records(seg):
            if seq < snap_seq:
                continue  # covered by the snapshot
            info.records += 1
            if not has_move(payload) and not any(
                    b in payload for s, b in wanted.items() if s not in info.pairs):
                continue  # names no symbol it does not hold yet, and moves none: nothing to do
            for cmd in unpackb(payload):
                info.forwarded = info.forwarded or is_forward(cmd)
                if not moved(cmd, known, info.pairs, gone):
                    symbol = book_symbol(cmd, known)
                    if symbol is not None and symbol not in gone:
                        info.pairs.add(symbol)
    return info


def is_forward(cmd: object) -> bool:
    """Whether a journaled engine command is one the account tier forwarded."""
    return type(cmd) in (tuple, list) and len(cmd) == FWD_RECORD_WIDTH and cmd[CMD_OP] == OP_FORWARD


def book_symbol(cmd: object, known: Collection[str]) -> str | None:
    """The known pair a journaled engine command creates a book for, or None. With the account
    tier on, an engine shard journals orders as ``(OP_FORWARD, j, seq, prev, command)``: the
    pair is the forwarded command's (missing these let every shard-count change start)."""
    if is_forward(cmd):
        cmd = cmd[FWD_RECORD_CMD]
    if type(cmd) not in (tuple, list) or len(cmd) <= CMD_SYMBOL or cmd[CMD_OP] not in _BOOK_OPS:
        return None
    symbol = cmd[CMD_SYMBOL]
    return symbol if type(symbol) is str and symbol in known else None


def scan(
    data_dir: str | Path, known: Collection[str], only: Callable[[int], bool] | None = None
) -> list[ShardDir]:
    """``scan_shard_dir`` for every ``shard-K`` directory (or those whose K passes ``only``)."""
    return [
        scan_shard_dir(p, known)
        for p in shard_dirs(data_dir)
        if only is None or only(int(p.name.split("-", 1)[1]))
    ]


def misplaced(dirs: Iterable[ShardDir], shards: int) -> list[Misplaced]:
    """Every pair that N = ``shards`` would route to a shard other than the one holding it
    (a directory K >= N is read by no shard, so all its pairs are misplaced)."""
    out = []
    for d in dirs:
        for symbol in sorted(d.pairs):
            owner = shard_for(symbol, shards)
            if owner != d.index:
                out.append(Misplaced(symbol, d.index, owner, d.path))
    return out


def fitting_counts(dirs: Iterable[ShardDir], limit: int = MAX_SHARDS) -> list[int]:
    """Shard counts under which every pair already sits in its owner's directory."""
    dirs = [d for d in dirs if d.pairs]
    return [n for n in range(1, limit + 1) if not misplaced(dirs, n)]


def by_directory(problems: list[Misplaced], shards: int) -> list[str]:
    """One part per directory naming its misplaced pairs (at most 8 each), so a refusal lists
    ``shard-1 (read by no shard of 1) holds DOGE-USD, ETH-USD`` once, not once per pair."""
    by_dir: dict[int, list[Misplaced]] = {}
    for p in problems:
        by_dir.setdefault(p.found_in, []).append(p)
    parts = []
    for index, items in sorted(by_dir.items()):
        where = items[0].directory
        more = f" and {len(items) - 8} more" if len(items) > 8 else ""
        if index >= shards:
            names = ", ".join(p.symbol for p in items[:8])
            parts.append(f"{where} (read by no shard of {shards}) holds {names}{more}")
        else:
            names = ", ".join(f"{p.symbol} (→ shard {p.owner})" for p in items[:8])
            parts.append(
                f"{where} holds pairs shard {index} of {shards} does not own: {names}{more}"
            )
    return parts


def describe(problems: list[Misplaced], dirs: list[ShardDir], shards: int, data_dir: str) -> str:
    """One message: what is where, why it refuses, and how to proceed."""
    parts = by_directory(problems, shards)
    fits = fitting_counts(dirs)
    if fits:
        also = f"; also fits {', '.join(map(str, fits[1:4]))}" if len(fits) > 1 else ""
        hint = f"start with the shard count it was written with (--shards {fits[0]}{also})"
    else:
        hint = "start with the shard count it was written with"
    return (
        f"refusing to start {shards} shard(s) on data dir {data_dir}: it was written with another "
        "shard count, and these pairs would start empty on their new shard (resting orders and "
        f"trade history left behind): {'; '.join(parts)}. To proceed, {hint}, or use another "
        "--data-dir. Moving pairs between shards is not supported yet."
    )


def check_data_dir(
    data_dir: str | Path,
    shards: int,
    known: Collection[str],
    only: Callable[[int], bool] | None = None,
) -> list[ShardDir]:
    """Raise DataDirError when a cluster of ``shards`` shards would not find every pair of
    ``data_dir`` in its owner's directory; return the scanned directories otherwise.

    ``only`` limits the scan to some directories: ``shardex engine --shard I`` checks its own
    and every K >= N (the other engines check theirs; the shard's recovery checks its own again,
    on the state it rebuilt).
    """
    dirs = scan(data_dir, known, only)
    problems = misplaced(dirs, shards)
    if problems:
        raise DataDirError(describe(problems, dirs, shards, str(data_dir)))
    return dirs


# -- the account tier ------------------------------------------------------------------
#
# Balances and holds live in ``accounts-J`` directories; books in ``shard-K``. The two must have
# been written by the same tier: resting orders journaled without the account tier hold no funds,
# so settling their fills would create money; books journaled with it settle into balances that a
# cluster without the tier would never touch (holds stuck, trades unsettled). And accounts hash
# with ``crc32(account) % M``, so a different M would look for an account's balance in the wrong
# directory. ``TIER_FILE`` records the M a data directory was first started with.

TIER_FILE = "accounts.json"
NO_TIER = (
    "it was written without the account tier: its resting orders hold no funds, and settling "
    "their fills would create money; "
)
BALANCES = (
    "balances and holds live in its accounts-J directories, and without the account tier its "
    "books would trade unsettled; "
)
OTHER_M = (
    "accounts hash to crc32(account) % M, so a different M would look for their balances in "
    "the wrong directory (moving accounts is not supported yet); "
)
_ACCOUNT_DIR = re.compile(r"^accounts-(\d+)$")


def _holds_data(path: Path) -> bool:
    """Whether a journal directory holds anything recovery would rebuild state from."""
    journal = Journal(path, {})  # read-only use: it only lists files
    if journal.snapshots():
        return True
    return any(next(iter_records(seg), None) is not None for seg in journal.segments())


def _any_data(root: Path) -> bool:
    dirs = [p for p in root.iterdir() if p.is_dir() and _ACCOUNT_DIR.match(p.name)]
    return any(_holds_data(p) for p in [*shard_dirs(root), *dirs])


def recorded_tier(data_dir: str | Path) -> int | None:
    """The account shard count M recorded in ``data_dir`` (None: not recorded yet)."""
    try:
        raw = json.loads((Path(data_dir) / TIER_FILE).read_text())
        value = raw["accounts"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        where = Path(data_dir) / TIER_FILE
        raise DataDirError(f"{where} is unreadable ({exc}): fix or remove it") from None
    if type(value) is not int or value < 0:
        raise DataDirError(f"{Path(data_dir) / TIER_FILE}: 'accounts' must be an integer >= 0")
    return value


def check_account_tier(data_dir: str | Path, accounts: int) -> None:
    """Raise DataDirError when a cluster with ``accounts`` account shards (0: the tier off) would
    misread ``data_dir``; else record M in it (first start) and return.

    Refuses: a recorded M that differs (unless nothing was journaled yet); without a record (a
    directory from before the record existed), account data the tier would not read (any
    ``accounts-J`` with data when M = 0, or J >= M), or engine journals with the tier turned on
    over them (they were written without it). Safe to call from every process of a cluster at
    once: the record is created atomically and only ever compared afterwards.
    """
    root = Path(data_dir)
    if not root.is_dir():
        root.mkdir(parents=True, exist_ok=True)
    how = "start with --accounts {m} (Procfile: -c accounts={m}), or use a new --data-dir"
    recorded = recorded_tier(root)
    if recorded is not None and recorded != accounts and not _any_data(root):
        (root / TIER_FILE).unlink(missing_ok=True)  # nothing was written under it: re-record
        recorded = None
    if recorded is not None:
        if recorded != accounts:
            raise DataDirError(
                f"refusing to start with {accounts} account shard(s) on data dir {root}: it was "
                f"started with {recorded}; "
                + (NO_TIER if recorded == 0 else BALANCES if accounts == 0 else OTHER_M)
                + how.format(m=recorded)  # fmt: skip
            )
        return
    account_dirs = sorted(
        (int(m.group(1)), p)
        for p in (root.iterdir())
        if (m := _ACCOUNT_DIR.match(p.name)) and p.is_dir() and _holds_data(p)
    )
    if account_dirs and (accounts == 0 or account_dirs[-1][0] >= accounts):
        found = account_dirs[-1][0] + 1
        raise DataDirError(
            f"refusing to start with {accounts} account shard(s) on data dir {root}: it holds "
            "balances of account shard(s) "
            f"{', '.join(p.name for _, p in account_dirs)}, which {accounts} account shard(s) "
            f"would not read: {how.format(m=found)}"
        )
    if accounts and not account_dirs:
        engines = [p for p in shard_dirs(root) if _holds_data(p)]
        if engines:
            raise DataDirError(
                f"refusing to start with the account tier on data dir {root}: it holds engine "
                f"journals ({', '.join(p.name for p in engines)}): "
                f"{NO_TIER}{how.format(m=0)}"
            )
    tmp = root / f".{TIER_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps({"accounts": accounts}) + "\n")
    try:
        os.link(tmp, root / TIER_FILE)  # atomic create-if-absent: a racing process loses...
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    if recorded_tier(root) != accounts:  # ...and compares with what the winner recorded
        check_account_tier(root, accounts)


# -- the shard count N a data directory was written with ------------------------------------------
#
# With the account tier on, pairs are not the only thing N decides: each account shard keeps one
# forward chain per engine shard (``(seq, prev)`` per link, rebuilt by replaying its journal with
# ``shard_for(symbol, N)``), and an engine shard's replay refuses a forwarded symbol it does not
# own under N. Replayed under another N, the chains are rebuilt differently and re-sent: orders
# rest again unfunded on their new shard, filled takers trade twice, holds stay for orders no
# book has. So N is recorded like M (``SHARDS_FILE``), and a data directory holding anything is
# refused by any other N; without a record (older directories) the scan below decides.

SHARDS_FILE = "shards.json"


@dataclass
class AccountDir:
    """What one ``accounts-J`` directory says about where its orders were forwarded."""

    index: int
    path: Path
    routed: set[tuple[str, int]] = field(default_factory=set)  # (symbol, engine shard) seen
    pairs: set[str] = field(default_factory=set)  # symbols forwarded, engine shard not recorded
    engines: set[int] = field(default_factory=set)  # engine shards its forward chains reach
    written: int | None = None  # the N its newest snapshot was written under (if it says)


def scan_account_dir(path: str | Path, known: Collection[str]) -> AccountDir:
    """The forwards an account shard's directory holds: from its newest valid snapshot the
    forward chains (``outbox``: which engine shards), the recent forwards (symbol → engine
    shard) and the open orders' symbols; after it, the symbols of the journaled new/amend
    commands (their engine shard is decided on replay, so only the symbol is known)."""
    path = Path(path)
    m = _ACCOUNT_DIR.match(path.name)
    info = AccountDir(int(m.group(1)) if m else -1, path)
    journal = Journal(path, {})  # read-only use: it only lists files
    snap_seq = 0
    for snap in reversed(journal.snapshots()):
        state = read_snapshot(snap)
        if state is None:
            continue
        snap_seq = int(state.get("seq", 0))
        written = state.get("engines")
        info.written = written if type(written) is int else None
        info.engines.update(int(e) for e, _ in state.get("outbox", ()))
        for e, msgs in state.get("forwards", ()):
            for msg in msgs:
                symbol = book_symbol(msg[LINK_CMD], known) if len(msg) > LINK_CMD else None
                if symbol is not None:
                    info.routed.add((symbol, int(e)))
        # (an order row: account, symbol, id, then the order's fields)
        info.pairs.update(sym for _, sym, *_ in state.get("orders", ()) if sym in known)
        break
    for seg in journal.segments():
        for seq, payload in iter_records(seg):
            if seq < snap_seq:
                continue
            for cmd in unpackb(payload):
                if (
                    type(cmd) in (tuple, list)
                    and len(cmd) > CMD_SYMBOL
                    and cmd[CMD_OP] in (A_NEW, A_AMEND)
                    and type(cmd[CMD_SYMBOL]) is str
                    and cmd[CMD_SYMBOL] in known
                ):
                    info.pairs.add(cmd[CMD_SYMBOL])
    info.pairs -= {s for s, _ in info.routed}
    return info


def account_dirs(data_dir: str | Path) -> list[Path]:
    """The ``accounts-J`` subdirectories of ``data_dir`` (replicas' ``.r1`` excluded), by J."""
    root = Path(data_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _ACCOUNT_DIR.match(p.name))]
    return [p for _, p in sorted(found) if p.is_dir()]


def account_problems(
    accts: Iterable[AccountDir], placed: Collection[str], shards: int, fits: Collection[int],
    owner_of: Callable[[str], int] | None = None,
) -> list[str]:  # fmt: skip
    """Why ``shards`` engine shards would re-route what the account shards forwarded: a
    forward seen going to another shard, a chain to a shard that would not exist, a snapshot
    written under another N, or a forwarded pair found in no engine directory whose shard the
    data cannot tell (it differs between the counts the rest of the data fits)."""
    out = []
    for a in accts:
        where = a.path
        if a.written is not None and a.written != shards:
            out.append(f"{where} was written with {a.written} engine shard(s)")
        for symbol, e in sorted(a.routed):
            owner = owner_of(symbol) if owner_of is not None else shard_for(symbol, shards)
            if owner != e:
                out.append(f"{where} forwarded {symbol} to shard {e} (→ shard {owner})")
        beyond = sorted(e for e in a.engines if e >= shards)
        if beyond:
            out.append(f"{where} has forward chains to shard(s) {beyond} (no shard of {shards})")
        for symbol in sorted(a.pairs - set(placed)):
            if len({shard_for(symbol, n) for n in fits}) > 1:
                out.append(f"{where} forwarded {symbol} to a shard the data does not tell")
    return out


def recorded_shards(data_dir: str | Path) -> int | None:
    """The engine shard count N recorded in ``data_dir`` (None: not recorded yet)."""
    where = Path(data_dir) / SHARDS_FILE
    try:
        value = json.loads(where.read_text())["shards"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataDirError(f"{where} is unreadable ({exc}): fix or remove it") from None
    if type(value) is not int or not 1 <= value <= MAX_SHARDS:
        raise DataDirError(f"{where}: 'shards' must be an integer 1..{MAX_SHARDS}")
    return value


def written_shards(journal_dir: str | Path) -> int | None:
    """The N recorded for the data directory that holds the journal directory ``journal_dir``
    (``DATA_DIR/shard-I``, ``accounts-J`` or a replica's ``.r1``): the routing its records were
    written under. None when nothing is recorded."""
    parent = Path(journal_dir).resolve().parent
    return recorded_shards(parent)


def _record(root: Path, name: str, body: dict, read: Callable[[Path], int | None]) -> int | None:
    """Write ``body`` to ``root/name`` unless it exists (atomic create-if-absent: racing
    processes agree on the first writer's); return what is recorded afterwards."""
    tmp = root / f".{name}.{os.getpid()}"
    tmp.write_text(json.dumps(body) + "\n")
    try:
        os.link(tmp, root / name)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return read(root)


def _mismatch(root: Path, shards: int, recorded: int, known: Collection[str]) -> str:
    """The refusal for a recorded N that differs with the account tier's data: what it would
    re-route (as far as the scan sees) and what to do."""
    dirs = scan(root, known)
    seen = account_problems(
        [scan_account_dir(p, known) for p in account_dirs(root)],
        {s for d in dirs for s in d.pairs}, shards, [recorded],
    )  # fmt: skip
    more = f" and {len(seen) - 8} more" if len(seen) > 8 else ""
    found = f"; it holds: {'; '.join(seen[:8])}{more}" if seen else ""
    return (
        f"refusing to start {shards} shard(s) on data dir {root}: it was written with "
        f"{recorded} shard(s) ({root / SHARDS_FILE}) and holds the account tier's data{found}. "
        "The account shards keep one forward chain per engine shard: replayed under another "
        "N they would be re-sent to shards that do not hold them. To proceed, start with the "
        f"shard count it was written with (--shards {recorded}; Procfile: -c engine="
        f"{recorded}), or use another --data-dir. With the account tier the count grows on the "
        "running cluster: shardex reshard --shards N under shardex up (without it any N "
        "starts: the placement map keeps every pair where its journal is)."
    )


def check_shard_count(
    data_dir: str | Path, shards: int, known: Collection[str], record: bool = True
) -> None:
    """Raise DataDirError when ``shards`` engine shards cannot serve ``data_dir``; else settle
    its placement map (``shardex.placement.load.settle``) and record N (``record``: False for
    a process that only compares, like the router, which knows no market table).

    Without the account tier's data any N may start: the map pins every pair to the shard
    whose journal holds it (a pair in a directory no shard of N reads is refused: move it
    first). With it, any other N than recorded is refused (its forward chains are per engine
    shard), and a directory from before the record is scanned for forwards sent under another
    routing. Safe to call from every process of a cluster at once."""
    root = Path(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    recorded = recorded_shards(root)
    if recorded is not None and recorded != shards and not _any_data(root):
        (root / SHARDS_FILE).unlink(missing_ok=True)  # nothing written under it: re-record
        recorded = None
    if recorded == shards and (not record or settled(root, shards)):
        return  # (the map was settled by whoever recorded N: no scan at every start)
    if recorded is None and not record:
        return
    dirs = scan(root, known)
    tier = any(d.forwarded for d in dirs) or bool(recorded_tier(root)) or any(
        _holds_data(p) for p in account_dirs(root))  # fmt: skip
    if recorded is not None and recorded != shards and tier:
        raise DataDirError(_mismatch(root, shards, recorded, known))
    if not record:
        return
    try:
        owner = settle(root, shards, dirs).owner
    except PlacementError as exc:
        where = f"{shards} shard(s) on data dir {root}"
        raise DataDirError(f"refusing to start {where}: {exc}") from None
    if recorded is None and tier:
        _check_old_forwards(root, shards, known, owner)
    if recorded != shards:
        _replace(root / SHARDS_FILE, json.dumps({"shards": shards}) + "\n")


def _check_old_forwards(
    root: Path, shards: int, known: Collection[str], owner: Callable[[str], int]
) -> None:
    """A directory from before N was recorded, with the account tier's data: refuse when its
    forwards went to other engine shards than ``owner`` (the journals' map) gives."""
    dirs = scan(root, known)
    accts = [scan_account_dir(p, known) for p in account_dirs(root)]
    fits = [n for n in fitting_counts(dirs) if not account_problems(accts, (), n, ())]
    held = {s for d in dirs for s in d.pairs}
    trouble = account_problems(accts, held, shards, fits, owner)
    if trouble:
        also = f" (--shards {fits[0]} fits it)" if fits else ""
        raise DataDirError(
            f"refusing to start {shards} shard(s) on data dir {root}: the account tier's "
            f"forwards were written with another shard count{also}: {'; '.join(trouble[:8])}. "
            "Replayed under another N its forward chains would be re-sent to shards that do not "
            "hold those pairs. To proceed, start with the shard count it was written with, or "
            "use another --data-dir."
        )


def _replace(path: Path, text: str) -> None:
    """Write ``path`` atomically (a temporary file renamed over it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def check_routing(journal_dir: str | Path, shards: int, who: str) -> None:
    """Raise JournalError when the journal in ``journal_dir`` was written under another engine
    shard count than ``shards``: a journal replays only with the routing it was written under.
    (An engine shard replaying forwards under another N turned accepted orders into refusals;
    an account shard rebuilt its forward chains per engine shard and re-sent them.) Called by
    both tiers' recovery before any replay, whoever started them (the CLI checks first)."""
    try:
        written = written_shards(journal_dir)
    except DataDirError as exc:
        raise JournalError(str(exc)) from None
    if written is not None and written != shards:
        raise JournalError(
            f"{who}: {journal_dir} was written with {written} engine shard(s), not {shards}: "
            "replayed under another routing its forwarded orders would be refused or re-sent to "
            f"shards that do not hold them; refusing to start (start with --shards {written})"
        )

"""Snapshots: a machine's state at a seq, written whole or not at all, read back checked.

``snapshot-<seq, 20 digits>.snap`` holds ``SNAP_MAGIC``, a crc32 and the msgpack state. It is
written to a temp file, fsynced, renamed and the directory fsynced, so recovery never sees a
partial one (and a damaged one is skipped for an older one).
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgpack

from shardex.engine import Engine, Market
from shardex.journal.disk import (
    OS_DISK,
    Disk,
    JournalError,
    JournalUnavailable,
    _reason,
    _snap_name,
    listed,
    write_file,
)

log = logging.getLogger("shardex.journal")

SNAP_MAGIC = b"SHXSNAP1"


class Machine:
    """What a journal replays into: a deterministic state machine with ``apply(cmd, out)``,
    ``seq`` (its last event seq), ``snapshot()`` (msgpack-able) — by default the ``Engine``.

    The generic seam that lets another single-writer process (the account shard, an engine
    shard with its settlement stage) reuse this journal instead of copying it: pass an object
    with ``new(markets)`` and ``restore(state, markets)`` as ``Journal(machine=...)``.
    """

    @staticmethod
    def new(markets: Mapping[str, Market]) -> Any:
        return Engine(markets)

    @staticmethod
    def restore(state: Mapping[str, Any], markets: Mapping[str, Market]) -> Any:
        return Engine.restore(state, markets)


ENGINE = Machine()


def restore_engine(
    state: Mapping[str, Any], markets: Mapping[str, Market], machine: Machine = ENGINE
) -> Engine:
    """The engine a snapshot describes; JournalError when it does not fit ``markets``."""
    try:
        return machine.restore(state, markets)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        seq = state.get("seq") if isinstance(state, Mapping) else None
        raise JournalError(f"snapshot seq {seq!r} cannot be restored: {exc}") from None


def write_snapshot(directory: Path, engine: Engine, disk: Disk = OS_DISK) -> Path:
    """Temp file, fsync, rename, fsync dir: a snapshot is either complete or absent.

    On a write error (disk full, ...) the temp file is removed and JournalUnavailable raised;
    recovery never sees a partial snapshot (temp files do not match ``snapshot-*.snap``, and
    every snapshot is checksummed anyway).
    """
    body = msgpack.packb(engine.snapshot(), use_bin_type=True)
    data = SNAP_MAGIC + struct.pack("<I", zlib.crc32(body)) + body
    final = directory / _snap_name(engine.seq)
    tmp = final.with_suffix(".tmp")
    try:
        write_file(disk, tmp, data)
        disk.replace(tmp, final)
    except OSError as exc:
        try:
            disk.unlink(tmp)
        except OSError:
            pass  # (never created, or cannot be removed: temp files are never read)
        raise JournalUnavailable(f"snapshot not written: {_reason(exc)}") from None
    try:
        disk.fsync_dir(directory)
    except OSError as exc:  # the snapshot file itself is complete and fsynced
        log.warning("fsync of %s after snapshot failed: %s", directory, _reason(exc))
    return final


def read_snapshot(path: Path, disk: Disk = OS_DISK) -> dict[str, Any] | None:
    """A snapshot's state, or None if it is damaged (then an older one is used)."""
    body = _snapshot_body(path, disk)
    if body is None:
        return None
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False, use_list=False)
    except Exception:
        return None


def _snapshot_body(path: Path, disk: Disk = OS_DISK) -> bytes | None:
    """A snapshot's checked msgpack body, or None if it is unreadable or damaged."""
    try:
        data = disk.read_bytes(path)
    except OSError:
        return None
    if len(data) < 12 or data[:8] != SNAP_MAGIC:
        return None
    (crc,) = struct.unpack("<I", data[8:12])
    body = data[12:]
    return body if zlib.crc32(body) == crc else None


def snapshot_books(path: Path, disk: Disk = OS_DISK) -> tuple[int, list[str]] | None:
    """A snapshot's (seq, symbols of its books), or None if it is damaged: what the data-dir
    check needs, without building the state (the books' orders and the rest are skipped
    undecoded, a few ms where ``read_snapshot`` takes up to a second for 80k orders)."""
    body = _snapshot_body(path, disk)
    if body is None:
        return None
    seq, symbols = None, None
    try:
        un = msgpack.Unpacker(raw=False, strict_map_key=False, use_list=False,
                              max_buffer_size=len(body) + 1)  # fmt: skip
        un.feed(body)
        for _ in range(un.read_map_header()):
            key = un.unpack()
            if key == "seq":
                seq = un.unpack()
            elif key == "books":
                symbols = []
                for _ in range(un.read_map_header()):
                    symbols.append(un.unpack())
                    un.skip()
            else:
                un.skip()
    except Exception:
        return None
    if type(seq) is not int or symbols is None:
        return None
    return seq, [str(s) for s in symbols]


def snapshot_moved(path: Path, disk: Disk = OS_DISK) -> set[str]:
    """The pairs a snapshot records as handed off to another shard (``moves``: its later
    commands for them are ``moving`` rejects, which hold no book); empty if none or damaged."""
    body = _snapshot_body(path, disk)
    if not body or b"\xa5moves" not in body:  # (msgpack's "moves": most snapshots have none)
        return set()
    try:
        state = msgpack.unpackb(body, raw=False, strict_map_key=False)
        return {str(row[0]) for row in state.get("moves", {}).get("moved", ())}
    except Exception:
        return set()


def snapshot_paths(directory: Path, disk: Disk = OS_DISK) -> list[Path]:
    """A journal directory's snapshots, oldest first."""
    return listed(disk, directory, "snapshot-", ".snap")


def best_snapshot(
    directory: Path,
    markets: Mapping[str, Market],
    machine: Machine = ENGINE,
    disk: Disk = OS_DISK,
) -> tuple[Engine, int | None]:
    """The engine of the newest valid snapshot (damaged ones are skipped), or a fresh one."""
    for path in reversed(snapshot_paths(directory, disk)):
        state = read_snapshot(path, disk)
        if state is None:
            log.warning("snapshot %s is damaged; trying an older one", path)
            continue
        engine = restore_engine(state, markets, machine)
        return engine, engine.seq
    return machine.new(markets), None


def open_orders(state: Mapping[str, Any]) -> int | None:
    """Open orders in a snapshot: an engine's books, or an account shard's held orders."""
    books = state.get("books")
    if isinstance(books, Mapping):
        return sum(len(b["bids"]) + len(b["asks"]) for b in books.values())
    orders = state.get("orders")
    return len(orders) if isinstance(orders, (list, tuple)) else None

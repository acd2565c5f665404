"""Records and segments: the journal's framing, written by the writer and read by everything
else (recovery, repair, replication, tools).

Record (little endian): ``u32 length | u32 crc32(seq bytes + payload) | u64 seq | payload``, one
record per group commit: ``seq`` is the engine seq *before* the first command of the group (its
events are seq+1, seq+2, ...) and the payload is the msgpack array of the group's command
tuples. A group larger than ``MAX_RECORD`` (the one limit writer and reader share) becomes
several consecutive records, each headed by the seq before its own first command.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardex.engine.codes import Command
from shardex.journal.disk import OS_DISK, Disk, JournalError, _seq_of, listed
from shardex.wire.protocol import unpackb

HEADER = struct.Struct("<IIQ")
SEQ = struct.Struct("<Q")
MAX_RECORD = 1 << 24  # payload bytes of one record: the writer splits to it, the reader checks it


def _frame(seq: int, payload: bytes) -> bytes:
    """One record: header (length, crc of seq bytes + payload, seq) then the payload."""
    crc = zlib.crc32(payload, zlib.crc32(SEQ.pack(seq)))
    return HEADER.pack(len(payload), crc, seq) + payload


def _array(items: list[bytes]) -> bytes:
    """A msgpack array from already-encoded items."""
    n = len(items)
    if n < 16:
        head = bytes((0x90 | n,))
    elif n < 1 << 16:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    return head + b"".join(items)


def encode_records(
    pack: Callable[[Any], bytes], cmds: list[Command], seqs: list[int], max_record: int
) -> bytes:
    """Commands (with the seq before each) as framed records, each payload at most
    ``max_record`` bytes; JournalError for a command that alone is over the limit."""
    payload = pack(cmds)
    if len(payload) <= max_record:
        return _frame(seqs[0], payload)
    # Rare: split into chunks. A msgpack array is its header followed by its items' own
    # encodings, so each chunk is framed from the per-command encodings.
    limit = max_record - 5  # 5 = largest array header
    parts: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    start = 0
    for i, cmd in enumerate(cmds):
        item = pack(cmd)
        if len(item) > limit:
            raise JournalError(
                f"command at seq {seqs[i]} encodes to {len(item)} bytes, over the "
                f"journal record limit of {max_record}; it cannot be journaled"
            )
        if chunk and size + len(item) > limit:
            parts.append(_frame(seqs[start], _array(chunk)))
            chunk, size, start = [], 0, i
        chunk.append(item)
        size += len(item)
    parts.append(_frame(seqs[start], _array(chunk)))
    return b"".join(parts)


@dataclass
class SegmentScan:
    path: Path
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    good_bytes: int = 0  # offset just past the last complete, valid record
    size: int = 0
    damage: str | None = None  # description of a bad record followed by more data
    torn: bool = False  # a partial/bad record at the very end (or followed only by zeros)
    zeros: int = 0  # bytes of preallocated, never-written space at the end


def _zeros_from(data: bytes, start: int) -> bool:
    """Whether ``data[start:]`` is all zero bytes (preallocated space), cheaply."""
    return data.count(0, start) == len(data) - start


def _zeros_after(data: bytes, n: int, off: int, end: int, length: int) -> bool:
    """Whether only zeros follow a bad record (a torn write into preallocated space). Asked
    only once a record is bad: it reads the rest of the file, and asking it for every good
    record made a scan quadratic in the segment's size (10 s for a 6 MB segment)."""
    return _zeros_from(data, min(n, end if length <= MAX_RECORD else off + HEADER.size))


def iter_records(
    path: Path, scan: SegmentScan | None = None, disk: Disk = OS_DISK
) -> Iterator[tuple[int, bytes]]:
    """Yield (seq, payload) of each valid record; fill ``scan`` with what was found."""
    scan = scan or SegmentScan(path)
    data = disk.read_bytes(path)
    scan.size = len(data)
    view = memoryview(data)
    off = 0
    n = len(data)
    while off < n:
        if data[off] == 0 and _zeros_from(data, off):
            scan.zeros = n - off  # preallocated space: the end of the log, not a record
            break
        if n - off < HEADER.size:
            scan.torn = True
            break
        length, crc, seq = HEADER.unpack_from(data, off)
        end = off + HEADER.size + length
        if length > MAX_RECORD or end > n:
            if (
                end >= n
                or length > MAX_RECORD
                and n - off < HEADER.size + 64
                or _zeros_after(data, n, off, end, length)
            ):
                scan.torn = True
            else:
                scan.damage = f"{path} offset {off}: bad record length {length}"
            break
        if zlib.crc32(view[off + 8 : end]) != crc:  # seq bytes + payload are contiguous
            if end == n or _zeros_after(data, n, off, end, length):
                scan.torn = True  # the last record of the file: a torn write
            else:
                scan.damage = f"{path} offset {off}: checksum mismatch"
            break
        scan.records += 1
        if scan.first_seq is None:
            scan.first_seq = seq
        scan.last_seq = seq
        off = end
        scan.good_bytes = off
        yield seq, data[off - length : off]


def records_from(
    segments: list[Path], seq: int, disk: Disk = OS_DISK
) -> Iterator[tuple[int, bytes]]:
    """Records with seq >= ``seq`` of ``segments`` (sorted), not reading those wholly before
    it."""
    start = 0
    for k, path in enumerate(segments):
        if _seq_of(path) <= seq:
            start = k
    for path in segments[start:]:
        for s, payload in iter_records(path, disk=disk):
            if s >= seq:
                yield s, payload


def records_at(
    segments: list[Path], first_seq: int, limit: int, disk: Disk = OS_DISK
) -> list[tuple[int, bytes]]:
    """Up to ``limit`` records (seq before, payload), the first starting exactly at
    ``first_seq`` ([] if no record starts there)."""
    out: list[tuple[int, bytes]] = []
    for s, payload in records_from(segments, first_seq, disk):
        if not out and s != first_seq:
            return []
        out.append((s, payload))
        if len(out) >= limit:
            break
    return out


def segment_paths(directory: Path, disk: Disk = OS_DISK) -> list[Path]:
    """A journal directory's segments, oldest first."""
    return listed(disk, directory, "journal-", ".log")


def read_commands(directory: str | Path, disk: Disk = OS_DISK) -> Iterator[tuple[int, Command]]:
    """Every journaled command still on disk with the seq before its record, oldest first
    (read-only)."""
    for path in segment_paths(Path(directory), disk):
        for seq, payload in iter_records(path, disk=disk):
            for cmd in unpackb(payload):
                yield seq, cmd

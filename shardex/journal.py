"""Durability for a shard: append-only command journal, snapshots, deterministic recovery.

The engine is deterministic, so the journal stores *commands*, not state: recovery loads the
newest valid snapshot and re-applies the journaled commands after it, which reproduces the exact
books, sequence numbers and trade ids of the uninterrupted run.

Layout of a journal directory::

    journal-<first seq, 20 digits>.log   segments, rolled at a size limit
    snapshot-<seq, 20 digits>.snap       engine state at seq (temp, fsync, rename, fsync dir)

Record (little endian): ``u32 length | u32 crc32(seq bytes + payload) | u64 seq | payload``, one
record per group commit: ``seq`` is the engine seq *before* the first command of the group (its
events are seq+1, seq+2, ...) and the payload is the msgpack array of the group's engine command
tuples. Batching records is what makes the write path one write + one fsync per drained batch
and recovery one msgpack decode per batch instead of per command.

A group commit larger than ``MAX_RECORD`` (the one limit both the writer and the reader use)
is written as several consecutive records, each headed by the seq before its own first command,
so nothing is ever written that recovery would reject.

With ``start_writer`` (what a shard uses for the ``batch`` and ``always`` policies) the write and
fsync of a group commit run on a writer thread (``os.write``/``os.fsync`` release the GIL), so
the caller matches the next batch while the previous one becomes durable. ``submit`` hands the
buffer over and returns a ticket; the writer makes batches durable strictly in ticket order,
one write + one fsync for all batches waiting together, and signals each completion on a pipe
the caller polls; ``durable`` says up to which ticket. A failed write stops the writer with
every batch from the failed one on still queued (nothing after a hole is ever written);
``retry`` tries them again in order.

A record cut short at the end of the newest segment is a torn write from a crash: it is truncated
on recovery (and logged). A bad record anywhere else means the file is damaged: recovery refuses,
naming the file and the offset.

A syncing journal preallocates its segment in ``PREALLOCATE`` steps of written (and synced)
zeros ahead of the last record, so a group commit's sync (``fdatasync``) has only data to flush,
not the file's new size, and does not wait for the file system's journal commit (measured on
ext4: p50 a quarter less, p90 under contention 0.5 ms instead of 4; ``bench/journal.py
--sync-micro``).
A segment may therefore end in zeros: never-written space, which recovery cuts off like a torn
tail (a bad record followed only by zeros is a torn write into that space). A clean close trims
the zeros.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

import msgpack

from shardex.engine import DEFAULT_MARKETS, Engine, Market
from shardex.engine.codes import Command, Event
from shardex.wire.protocol import unpackb

log = logging.getLogger("shardex.journal")

HEADER = struct.Struct("<IIQ")
SEQ = struct.Struct("<Q")
MAX_RECORD = 1 << 24  # payload bytes of one record: the writer splits to it, the reader checks it
# Zeros the writer thread keeps written ahead of its last record. Small steps: each costs one
# extra write + sync (~1 in 600 one-order commits), and space preallocated is space a full disk
# does not report until it is used up.
PREALLOCATE = 64 << 10
SNAP_MAGIC = b"SHXSNAP1"
FSYNC_POLICIES = ("always", "batch", "none")
# The segment writer's system calls, named so that fault tests can make them fail (a full disk
# cannot be arranged for every case, e.g. a truncate that fails after a failed write).
_write, _fsync, _ftruncate = os.write, os.fsync, os.ftruncate
# Preallocation's own calls: zeros written ahead, and their sync (not ``_fsync``: the record
# syncs are the ones tests hold or fail).
_pwrite, _prealloc_sync = os.pwrite, os.fsync
# A record inside preallocated space changes no metadata that reading it back needs (size and
# blocks are synced already): fdatasync, which, unlike fsync, does not wait for a file-system
# journal commit for the file's timestamps.
_fdatasync = getattr(os, "fdatasync", os.fsync)

EPOCH_FILE = "epoch"  # highest leader epoch seen (replicated shards, issue 15)


class JournalError(Exception):
    """The journal cannot be used as it is; the message names the file and offset."""


class JournalUnavailable(JournalError):
    """A write failed (disk full, I/O error); the message is the one-line reason.

    The journal stays consistent (the failed write is truncated away) and keeps the buffered
    commands: calling ``commit`` again retries them. The caller holds its replies meanwhile.
    """


def _reason(exc: OSError) -> str:
    return " ".join(str(exc.strerror or exc).split()) or type(exc).__name__


def _seg_name(seq: int) -> str:
    return f"journal-{seq:020d}.log"


def _snap_name(seq: int) -> str:
    return f"snapshot-{seq:020d}.snap"


def _seq_of(path: Path) -> int:
    return int(path.stem.split("-", 1)[1])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------ snapshots


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


def write_snapshot(directory: Path, engine: Engine) -> Path:
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
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            _fsync(fh.fileno())
        os.replace(tmp, final)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise JournalUnavailable(f"snapshot not written: {_reason(exc)}") from None
    try:
        _fsync_dir(directory)
    except OSError as exc:  # the snapshot file itself is complete and fsynced
        log.warning("fsync of %s after snapshot failed: %s", directory, _reason(exc))
    return final


def read_snapshot(path: Path) -> dict[str, Any] | None:
    """A snapshot's state, or None if it is damaged (then an older one is used)."""
    body = _snapshot_body(path)
    if body is None:
        return None
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False, use_list=False)
    except Exception:
        return None


def _snapshot_body(path: Path) -> bytes | None:
    """A snapshot's checked msgpack body, or None if it is unreadable or damaged."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) < 12 or data[:8] != SNAP_MAGIC:
        return None
    (crc,) = struct.unpack("<I", data[8:12])
    body = data[12:]
    return body if zlib.crc32(body) == crc else None


def snapshot_books(path: Path) -> tuple[int, list[str]] | None:
    """A snapshot's (seq, symbols of its books), or None if it is damaged: what the data-dir
    check needs, without building the state (the books' orders and the rest are skipped
    undecoded, a few ms where ``read_snapshot`` takes up to a second for 80k orders)."""
    body = _snapshot_body(path)
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


# ------------------------------------------------------------------------------ records


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


def iter_records(path: Path, scan: SegmentScan | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield (seq, payload) of each valid record; fill ``scan`` with what was found."""
    scan = scan or SegmentScan(path)
    with open(path, "rb") as fh:
        data = fh.read()
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


PROGRESS_EVERY = 1024  # records between two progress reports of a replay


def _sizes(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        try:
            total += p.stat().st_size
        except OSError:
            pass
    return total


class _Meter:
    """A replay's progress reports (``Journal.recover``'s ``progress``): at the start, every
    ``PROGRESS_EVERY`` records, at the end; bytes read against the bytes of its segments."""

    def __init__(self, segments: list[Path], progress: Callable[[int, int, int], None] | None):
        self.progress = progress
        self.total = _sizes(segments) if progress is not None else 0
        self.read = 0  # bytes of the segments before the current one
        if progress is not None:
            progress(0, 0, self.total)  # the snapshot is loaded: the replay starts

    def record(self, replayed: int, scan: SegmentScan) -> None:
        if self.progress is not None and scan.records % PROGRESS_EVERY == 0:
            self.progress(replayed, self.read + scan.good_bytes, self.total)

    def end(self, replayed: int) -> None:
        if self.progress is not None:
            self.progress(replayed, self.total, self.total)


def uncovered(segments: list[Path], seq: int) -> list[Path]:
    """``segments`` (sorted) without those a snapshot at ``seq`` covers whole: a segment whose
    successor starts at or before ``seq`` holds only records before it. A restart reads only
    the rest (retention keeps older segments for gap repair and the previous snapshot)."""
    return [s for s, nxt in zip(segments, [*segments[1:], None], strict=True)
            if nxt is None or _seq_of(nxt) > seq]  # fmt: skip


def _best_snapshot(
    directory: Path, markets: Mapping[str, Market], machine: Machine = ENGINE
) -> tuple[Engine, int | None]:
    """The engine of the newest valid snapshot (damaged ones are skipped), or a fresh one."""
    for path in sorted(directory.glob("snapshot-*.snap"), key=_seq_of, reverse=True):
        state = read_snapshot(path)
        if state is None:
            log.warning("snapshot %s is damaged; trying an older one", path)
            continue
        engine = restore_engine(state, markets, machine)
        return engine, engine.seq
    return machine.new(markets), None


def _replay(
    engine: Engine,
    segments: list[Path],
    ends: dict[Path, int] | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> tuple[int, list[SegmentScan]]:
    """Apply every record after ``engine.seq``; return (commands replayed, torn tails to cut).

    Read-only: the caller truncates. Raises JournalError on damage, a gap, or a torn older
    segment that the next one does not continue. ``ends`` receives, per segment with a replayed
    record, the seq reached after its last record (the last event seq it produced).
    """
    replayed = 0
    cut: list[SegmentScan] = []
    torn: SegmentScan | None = None  # a torn older segment, until a later one continues it
    out: list[Event] = []
    apply = engine.apply
    meter = _Meter(segments, progress)
    for i, path in enumerate(segments):
        last = i == len(segments) - 1
        scan = SegmentScan(path)
        for seq, payload in iter_records(path, scan):
            meter.record(replayed, scan)
            if torn is not None:
                if seq > engine.seq:
                    raise JournalError(
                        f"journal damaged: {torn.path} offset {torn.good_bytes}: "
                        f"incomplete record, and {path} does not continue it (starts at "
                        f"seq {seq}, the journal ends at {engine.seq}); refusing to start"
                    )
                cut.append(torn)
                torn = None
            if seq < engine.seq:
                continue  # covered by the snapshot (snapshots fall between records)
            if seq != engine.seq:
                raise JournalError(
                    f"{path}: record with seq {seq} but the engine is at {engine.seq} "
                    "(missing records or a foreign file); refusing to start"
                )
            cmds = unpackb(payload)
            for cmd in cmds:
                apply(cmd, out)
            out.clear()
            replayed += len(cmds)
            if ends is not None:
                ends[path] = engine.seq
        if scan.damage:
            raise JournalError(
                f"journal damaged: {scan.damage}; refusing to start "
                "(restore the file or move it away to start from what is left)"
            )
        if scan.torn:
            if last:
                cut.append(scan)
            else:
                torn = scan  # acceptable only if a later segment continues it
        elif scan.zeros:
            cut.append(scan)  # preallocated space the writer never reached
        meter.read += scan.size
    meter.end(replayed)
    if torn is not None:
        cut.append(torn)  # only empty segments follow it: it is the end of the log
    return replayed, cut


@dataclass
class Recovered:
    engine: Engine
    snapshot_seq: int | None
    replayed: int
    truncated: list[str] = field(default_factory=list)


class Journal:
    """One shard's journal directory: append (group commit), snapshot, recover, read back."""

    def __init__(
        self,
        directory: str | Path,
        markets: Mapping[str, Market],
        fsync: str = "batch",
        segment_bytes: int = 64 << 20,
        keep_snapshots: int = 2,
        max_record: int = MAX_RECORD,
        machine: Machine = ENGINE,
        preallocate: int | None = None,
    ) -> None:
        self.machine = machine
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, got {fsync!r}")
        if not 64 <= max_record <= MAX_RECORD:
            raise ValueError(f"max_record must be in 64..{MAX_RECORD} (what recovery accepts)")
        self.max_record = max_record
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.markets = markets
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.keep_snapshots = max(1, keep_snapshots)
        self._fd: int | None = None  # current segment, O_APPEND, unbuffered (see commit)
        self._path: Path | None = None
        self._size = 0  # bytes of whole records in the current segment
        self._dirty: Path | None = None  # a segment whose failed write could not be cut off
        self.healthy = True  # False from a failed commit until one succeeds
        self.last_error: str | None = None  # one-line reason of the last failed write
        self._buf: list[Command] = []
        self._seqs: list[int] = []  # engine seq before each buffered command (record headers)
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self.records_written = 0
        self._cursor: tuple[Engine, Iterator[tuple[int, bytes]], list[Event]] | None = None
        self.last_write_s = 0.0  # timings of the last commit, read by the shard's metrics
        self.last_fsync_s = 0.0
        # The writer thread (``start_writer``); None: ``commit`` writes on the caller's thread.
        self._thread: threading.Thread | None = None
        self._cv = threading.Condition()
        self._queue: deque[tuple[int, int, int, bytes]] = deque()  # (ticket, cmds, seq, data)
        self._ticket = 0  # the newest ticket handed out by ``submit``
        self._durable = 0  # every batch up to this ticket is written and synced
        self._failure: str | None = None  # why the writer stopped (None: it runs)
        self._retry = False
        self._stopping = False
        self._signal_r = self._signal_w = -1  # completion pipe: writer → caller
        # zeros kept written ahead of the last record (default: PREALLOCATE when syncing)
        self.preallocate = max(0, preallocate if preallocate is not None else
                               (PREALLOCATE if fsync != "none" else 0))  # fmt: skip
        self._alloc = 0  # bytes of the current segment file (records + preallocated zeros)

    # -- recovery -------------------------------------------------------------------------------

    def segments(self) -> list[Path]:
        return sorted(self.dir.glob("journal-*.log"), key=_seq_of)

    def snapshots(self) -> list[Path]:
        return sorted(self.dir.glob("snapshot-*.snap"), key=_seq_of)

    def recover(self, progress: Callable[[int, int, int], None] | None = None) -> Recovered:
        """Newest valid snapshot + replay of every record after it. Truncates a torn tail.

        A torn record may end the newest segment (a crash mid-write), or an older one when
        the next segment continues exactly where its last whole record ended (a write that
        failed and could not be cut off, after which the writer rolled a new segment).
        Anything else that is incomplete or bad is damage: recovery refuses, naming it.
        ``progress(commands done, bytes read, bytes to read)`` is called as the replay goes.
        """
        engine, snap_seq = _best_snapshot(self.dir, self.markets, self.machine)
        segments = self.segments()
        if snap_seq is not None:
            segments = uncovered(segments, snap_seq)
        replayed, cut = _replay(engine, segments, progress=progress)
        truncated = []
        for scan in cut:
            if scan.torn:
                log.warning(
                    "truncating torn tail of %s at offset %d (%d bytes of a partial record "
                    "from a crash or a failed write)",
                    scan.path,
                    scan.good_bytes,
                    scan.size - scan.good_bytes,
                )
            else:
                log.info("trimming %d preallocated bytes off %s", scan.zeros, scan.path)
            with open(scan.path, "r+b") as fh:
                fh.truncate(scan.good_bytes)
                os.fsync(fh.fileno())
            if scan.torn:
                truncated.append(f"{scan.path}@{scan.good_bytes}")
        return Recovered(engine, snap_seq, replayed, truncated)

    # -- writing ----------------------------------------------------------------------------

    def add(self, seq_before: int, cmd: Command) -> None:
        """Buffer one command (applied at ``seq_before``); ``commit`` writes the buffer."""
        self._buf.append(cmd)
        self._seqs.append(seq_before)
        if self.fsync == "always":
            if self._thread is not None:
                self.submit()  # one record and one sync per command, in order
                return
            try:
                self.commit()
            except JournalUnavailable:
                pass  # kept buffered; the caller's next commit() reports it

    @property
    def pending(self) -> int:
        """Commands added but not yet committed (or, with the writer, not yet submitted)."""
        return len(self._buf)

    def commit(self) -> None:
        """Write buffered commands, one write (+ fsync unless policy is none).

        Normally one record; a buffer whose encoding exceeds ``max_record`` becomes several
        consecutive records (see ``_encode``), all in the same write. With the writer thread:
        submit the buffer and wait until everything submitted is durable (JournalUnavailable
        if the writer is stopped by a failure).
        """
        if self._thread is not None:
            self.wait(self.submit())
            return
        if not self._buf:
            return
        data = self._encode()
        self._write_durably(data, self._seqs[0], len(self._buf))
        self._buf.clear()
        self._seqs.clear()

    def _write_durably(self, data: bytes, first_seq: int, commands: int) -> None:
        """Append framed records (one write, then one fsync per policy); on any OSError cut
        the partial write off, mark the journal unhealthy and raise JournalUnavailable."""
        try:
            if self._dirty is not None:
                self._repair_tail()
            if self._fd is None or self._size >= self.segment_bytes:
                self._roll(first_seq)
            fd = self._fd
            assert fd is not None
            start = self._size
            if self.preallocate and start + len(data) > self._alloc:
                self._extend(start + len(data))
            sync = _fdatasync if start + len(data) <= self._alloc else _fsync
            t0 = perf_counter()
            try:
                os.lseek(fd, start, os.SEEK_SET)  # (a failed write may have moved it)
                view = memoryview(data)
                while view:  # os.write may write less than asked
                    view = view[_write(fd, view) :]
                t1 = perf_counter()
                if self.fsync != "none":
                    sync(fd)
                    self.last_fsync_s = perf_counter() - t1
            except OSError:
                self._cut(start)
                raise
        except OSError as exc:
            self.healthy = False
            self.last_error = _reason(exc)
            log.error(
                "journal write failed (%s): %d commands kept for retry",
                self.last_error,
                commands,
            )
            raise JournalUnavailable(self.last_error) from None
        self.last_write_s = t1 - t0
        self._size = start + len(data)
        # A record written past the preallocated space (its preallocation failed: disk full)
        # is part of the file now. ``_alloc`` never stays below it: the next preallocation
        # would write its zeros from there, over this acknowledged record, or cut it off when
        # it fails (a checksum mismatch followed by records: a journal that refuses to start).
        self._alloc = max(self._alloc, self._size)
        self.records_written += commands
        if not self.healthy:
            log.warning("journal writes again after: %s", self.last_error)
        self.healthy = True
        self.last_error = None

    def _extend(self, end: int) -> None:
        """Write and sync zeros past ``end`` (whole ``preallocate`` steps) so that the syncs of
        the records that fill them flush data only. Best effort: on a failure (disk full) the
        file is cut back and the record is appended as without preallocation."""
        fd, step = self._fd, self.preallocate
        assert fd is not None
        target = (end // step + 1) * step
        # Zeros go only past every whole record (and past zeros already synced): never over a
        # record, and a failure cuts back to there, never into a record.
        keep = max(self._alloc, self._size)
        try:
            zero = bytes(min(step, 1 << 20))
            pos = keep
            while pos < target:
                pos += _pwrite(fd, zero[: target - pos], pos)
            _prealloc_sync(fd)
            self._alloc = target
        except OSError as exc:
            log.warning("cannot preallocate %s to %d bytes: %s", self._path, target,
                        _reason(exc))  # fmt: skip
            try:
                _ftruncate(fd, keep)
            except OSError:
                pass  # zeros past ``keep`` stay: recovery reads them as the end of the log

    # -- the writer thread ----------------------------------------------------------------------

    def start_writer(self, preallocate: int | None = None) -> int:
        """Move writes and fsyncs to a writer thread; return the fd that becomes readable when
        batches become durable or the writer fails (poll it, then call ``completions``).
        ``preallocate``: zeros kept ahead of the last record (None: as constructed)."""
        if self._thread is not None:
            return self._signal_r
        if preallocate is not None:
            self.preallocate = max(0, preallocate)
        self._signal_r, self._signal_w = os.pipe()
        os.set_blocking(self._signal_r, False)
        os.set_blocking(self._signal_w, False)  # a full pipe already says "look"
        self._thread = threading.Thread(
            target=self._writer, name=f"journal-writer {self.dir}", daemon=True
        )
        self._thread.start()
        return self._signal_r

    @property
    def threaded(self) -> bool:
        return self._thread is not None

    def submit(self) -> int:
        """Hand the buffered commands to the writer; the ticket that, once ``durable``, covers
        every command added so far (the previous ticket when the buffer is empty)."""
        if self._buf:
            data = self._encode()
            with self._cv:
                self._ticket += 1
                self._queue.append((self._ticket, len(self._buf), self._seqs[0], data))
                self._cv.notify_all()
            self._buf = []
            self._seqs = []
        return self._ticket

    @property
    def durable(self) -> int:
        """Every batch up to this ticket is on disk (synced per policy)."""
        return self._durable

    @property
    def failure(self) -> str | None:
        """Why the writer stopped (None while it writes); ``retry`` restarts it."""
        return self._failure

    @property
    def queued(self) -> int:
        """Batches submitted and not yet durable."""
        return len(self._queue)

    def completions(self) -> tuple[int, str | None]:
        """Clear the completion signal; (``durable`` ticket, ``failure``)."""
        if self._signal_r >= 0:  # (closed once the writer has stopped)
            try:
                while os.read(self._signal_r, 4096):
                    pass
            except BlockingIOError:
                pass
        with self._cv:
            return self._durable, self._failure

    def retry(self) -> None:
        """After a failure: try the queued batches again, oldest first (a completion reports
        the outcome)."""
        with self._cv:
            if self._failure is not None:
                self._retry = True
                self._cv.notify_all()

    def wait(self, ticket: int, timeout: float | None = None) -> None:
        """Block until ``ticket`` is durable; JournalUnavailable if the writer fails first (or
        has failed and not recovered), TimeoutError after ``timeout`` seconds."""
        with self._cv:
            if self._failure is not None and self._durable < ticket:
                self._retry = True  # a synchronous commit retries, as without the writer
                self._cv.notify_all()
                while self._retry:
                    self._cv.wait()
            ok = self._cv.wait_for(
                lambda: self._durable >= ticket or self._failure is not None, timeout
            )
            if not ok:
                raise TimeoutError(f"journal batch {ticket} not durable after {timeout}s")
            if self._durable < ticket:
                raise JournalUnavailable(self._failure or "journal writer stopped")

    def _signal(self) -> None:
        try:
            os.write(self._signal_w, b"!")
        except (BlockingIOError, OSError):
            pass  # full pipe: the reader has a wake-up pending anyway

    def _writer(self) -> None:
        """Write what is queued, oldest first, all waiting batches in one write + one fsync
        (``always``: one batch at a time). Stops at a failure until ``retry``."""
        cv = self._cv
        while True:
            with cv:
                while not (
                    (self._queue and (self._failure is None or self._retry))
                    or (self._stopping and (not self._queue or self._failure is not None))
                ):
                    cv.wait()
                if not self._queue or (self._failure is not None and not self._retry):
                    return  # stopping: nothing left, or nothing that can be written
                batches = [self._queue[0]] if self.fsync == "always" else list(self._queue)
            try:
                if len(batches) == 1:
                    _, cmds, seq, data = batches[0]
                else:
                    cmds = sum(b[1] for b in batches)
                    seq, data = batches[0][2], b"".join(b[3] for b in batches)
                self._write_durably(data, seq, cmds)
            except JournalUnavailable as exc:
                failure: str | None = str(exc)
            except Exception as exc:  # a bug must not leave the caller waiting forever
                log.exception("journal writer failed")
                failure = f"journal writer error ({type(exc).__name__})"
            else:
                failure = None
            with cv:
                self._retry = False
                if failure is None:
                    for _ in batches:
                        self._queue.popleft()
                    self._durable = batches[-1][0]
                self._failure = failure
                cv.notify_all()
            self._signal()

    def _stop_writer(self, timeout: float = 10.0) -> None:
        """Let the writer finish what is queued (unless it is stopped by a failure), then end."""
        thread = self._thread
        if thread is None:
            return
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        thread.join(timeout)
        if thread.is_alive():
            log.error("journal writer still busy after %.0fs; leaving it", timeout)
            return
        self._thread = None
        for fd in (self._signal_r, self._signal_w):
            os.close(fd)
        self._signal_r = self._signal_w = -1
        with self._cv:
            if self._queue:
                log.error(
                    "journal closed with %d batches (%d commands) not written: %s",
                    len(self._queue), sum(b[1] for b in self._queue), self._failure,
                )  # fmt: skip
            self._stopping = False

    def _cut(self, good: int) -> None:
        """After a failed write: drop whatever part of it reached the file."""
        try:
            _ftruncate(self._fd, good)  # type: ignore[arg-type]
            self._alloc = good
        except OSError as exc:
            # The segment may end in a partial record: nothing may be appended after it.
            log.error("cannot truncate %s to %d: %s", self._path, good, _reason(exc))
            self._dirty = self._path

    def _repair_tail(self) -> None:
        """Retry cutting a failed write off; failing that, leave the segment for a new one.

        Recovery accepts a torn record at the end of a segment only when the next segment
        continues exactly where its last whole record ended, which is what rolling gives.
        """
        dirty = self._dirty
        try:
            _ftruncate(self._fd, self._size)  # type: ignore[arg-type]
            self._alloc = self._size
        except OSError:
            if self._size == 0:  # nothing good in it: a new segment would get its very name
                os.unlink(dirty)  # type: ignore[arg-type]  # OSError → JournalUnavailable
            self._close_segment()
        self._dirty = None

    def _encode(self) -> bytes:
        """The buffer as framed records, each payload at most ``max_record`` bytes."""
        payload = self._pack(self._buf)
        if len(payload) <= self.max_record:
            return _frame(self._seqs[0], payload)
        # Rare: split into chunks. A msgpack array is its header followed by its items' own
        # encodings, so each chunk is framed from the per-command encodings.
        pack, limit = self._pack, self.max_record - 5  # 5 = largest array header
        parts: list[bytes] = []
        chunk: list[bytes] = []
        size = 0
        start = 0
        for i, cmd in enumerate(self._buf):
            item = pack(cmd)
            if len(item) > limit:
                raise JournalError(
                    f"command at seq {self._seqs[i]} encodes to {len(item)} bytes, over the "
                    f"journal record limit of {self.max_record}; it cannot be journaled"
                )
            if chunk and size + len(item) > limit:
                parts.append(_frame(self._seqs[start], _array(chunk)))
                chunk, size, start = [], 0, i
            chunk.append(item)
            size += len(item)
        parts.append(_frame(self._seqs[start], _array(chunk)))
        return b"".join(parts)

    def _roll(self, first_seq: int) -> None:
        """Start (or reopen) the segment whose first record has ``first_seq``.

        Unbuffered writes at the end of the last record: after a failed write the file holds
        exactly what the kernel took, which ``_cut`` removes; no library buffer can write it
        again later.
        """
        self._close_segment()
        path = self.dir / _seg_name(first_seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            self._size = self._alloc = os.fstat(fd).st_size
            _fsync_dir(self.dir)
        except OSError:
            os.close(fd)
            raise
        self._fd, self._path = fd, path

    def _close_segment(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            if self._alloc > self._size and self._dirty is None:
                try:  # a cleanly left segment ends at its last record
                    os.ftruncate(fd, self._size)
                except OSError as exc:
                    log.warning("cannot trim %s: %s", self._path, _reason(exc))
            try:
                os.close(fd)
            except OSError:
                pass

    def snapshot(self, engine: Engine) -> Path:
        """Write a snapshot, start a new segment after it, drop what older snapshots cover.

        Commits buffered commands first (a snapshot must not hold state the log lacks);
        raises JournalUnavailable when that or the snapshot write fails. With the writer
        thread, ``commit`` returns once the writer's queue is empty, and only the caller
        submits: the writer is idle while the snapshot is written and the segment closed.
        """
        self.commit()
        path = write_snapshot(self.dir, engine)
        if self._dirty is None:
            self._close_segment()  # next commit rolls a segment that starts at this seq
            try:  # ... created now, so a restart sees the snapshot covers every older segment
                self._roll(engine.seq)  # (and reads none of them)
            except OSError as exc:
                log.warning("cannot start the segment after snapshot %s: %s (the next commit "
                            "will)", path.name, _reason(exc))  # fmt: skip
        self._retain()
        return path

    def _retain(self) -> None:
        snaps = self.snapshots()
        if len(snaps) <= self.keep_snapshots:
            return
        for old in snaps[: -self.keep_snapshots]:
            old.unlink()
        oldest_kept = _seq_of(snaps[-self.keep_snapshots])
        segs = self.segments()
        for seg, nxt in zip(segs, segs[1:], strict=False):
            if _seq_of(nxt) <= oldest_kept:
                seg.unlink()  # every record in it precedes the oldest snapshot we keep

    def close(self) -> None:
        """Stop the writer (after it has written what is queued), close the segment."""
        self._stop_writer()
        if self._thread is None:
            self._close_segment()

    # -- reading back ------------------------------------------------------------------------

    def commands(self) -> Iterator[tuple[int, Command]]:
        return read_commands(self.dir)

    def events(self, first: int, last: int, budget: int | None = None) -> list[Event]:
        """Events with seq in [first, last], regenerated by replaying from the best snapshot.

        Used to repair gaps older than what a shard keeps in memory; raises JournalError when
        the range is no longer covered (trimmed by snapshot retention). A repair walks forward
        in consecutive ranges, so the replay position is kept between calls: a long repair
        costs one pass over the journal, not one pass per range.

        ``budget`` caps the commands replayed by this call (the shard's loop must not stall on
        one request): when the replay has not reached ``first`` yet, the result is empty and
        the position is kept, so asking again continues where this call stopped.
        """
        cur = self._cursor
        if cur is None or (cur[2][0][1] > first if cur[2] else cur[0].seq >= first):
            base: Engine | None = None
            for path in reversed(self.snapshots()):
                state = read_snapshot(path)
                if state is not None and state["seq"] < first:
                    base = restore_engine(state, self.markets, self.machine)
                    break
            engine = base or self.machine.new(self.markets)
            cur = self._cursor = (engine, self._records_skipping(engine.seq), [])
        engine, records, buf = cur
        if buf and buf[0][1] < first:
            del buf[: max(0, min(len(buf), first - buf[0][1]))]
        spent = 0
        reopened = False
        while engine.seq < last:
            if budget is not None and spent >= budget and engine.seq < first:
                return []  # not there yet: the cursor keeps the position for the next call
            try:
                seq, payload = next(records)
            except StopIteration:
                if reopened:
                    break
                # The reader saw the segments as they were when it began: records committed
                # since then (the cursor outlives calls) are read on from where it stands.
                # Without this a range committed after the cursor was made was reported "no
                # longer in the journal" (or cut short), and the repair gave up on it.
                reopened = True
                records = self._records_skipping(engine.seq)
                self._cursor = (engine, records, buf)
                continue
            except OSError as exc:  # a segment removed by snapshot retention meanwhile
                self._cursor = None
                raise JournalError(f"events {first}..{last}: journal read failed ({exc})") from None
            if seq != engine.seq:
                break
            cmds = unpackb(payload)
            spent += len(cmds)
            for cmd in cmds:
                engine.apply(cmd, buf)
            if buf and buf[0][1] < first:
                del buf[: max(0, min(len(buf), first - buf[0][1]))]
        result = [e for e in buf if e[1] <= last]
        if not result or result[0][1] != first:
            self._cursor = None
            raise JournalError(f"events {first}..{last} are no longer in the journal")
        return result

    def replay_from(self, at: int) -> Replay:
        """A ``Replay`` of this journal's machine from the newest snapshot with seq <= ``at``
        (or from the start): what a re-send older than an in-memory ring regenerates its
        messages with (the account tier's settlements). Raises JournalError when the records
        after that snapshot are no longer on disk."""
        base = None
        for path in reversed(self.snapshots()):
            if _seq_of(path) > at:
                continue  # (named by its seq: not worth reading)
            state = read_snapshot(path)
            if state is not None and state["seq"] <= at:
                base = restore_engine(state, self.markets, self.machine)
                break
        machine = base if base is not None else self.machine.new(self.markets)
        segs = self.segments()
        if segs and _seq_of(segs[0]) > machine.seq:  # (a later record would say so too, but
            # after a snapshot the only segment may still be empty)
            raise JournalError(
                f"journal records from seq {machine.seq} to {_seq_of(segs[0])} are no longer "
                "on disk (removed by snapshot retention)"
            )
        return Replay(machine, self._records_skipping)

    def _records_skipping(self, seq: int) -> Iterator[tuple[int, bytes]]:
        """Records with seq >= ``seq``, not reading the segments wholly before it."""
        segs = self.segments()
        start = 0
        for k, path in enumerate(segs):
            if _seq_of(path) <= seq:
                start = k
        for path in segs[start:]:
            for s, payload in iter_records(path):
                if s >= seq:
                    yield s, payload

    # -- replication (issue 15): additive, used only by ``shardex.node.replica`` ---------------

    def buffered(self) -> tuple[int, list[Command]] | None:
        """The commands added since the last commit and the seq before the first (None: none):
        what the next ``commit`` writes, which a primary ships to its standby."""
        if not self._buf:
            return None
        return self._seqs[0], list(self._buf)

    def records(self, first_seq: int, limit: int = 1000) -> list[tuple[int, bytes]]:
        """Up to ``limit`` committed records (seq before, msgpack payload), the first starting
        exactly at ``first_seq`` ([] if no record starts there: trimmed away, or not written
        yet). Segments wholly before ``first_seq`` are not read."""
        segs = self.segments()
        start = 0
        for k, path in enumerate(segs):
            if _seq_of(path) <= first_seq:
                start = k
        out: list[tuple[int, bytes]] = []
        for path in segs[start:]:
            for s, payload in iter_records(path):
                if s < first_seq:
                    continue
                if not out and s != first_seq:
                    return []
                out.append((s, payload))
                if len(out) >= limit:
                    return out
        return out

    def read_epoch(self) -> int:
        """The highest leader epoch this journal has seen (0: never replicated)."""
        try:
            return int((self.dir / EPOCH_FILE).read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def write_epoch(self, epoch: int) -> None:
        """Record ``epoch`` durably (never lowers it): written before anything of that epoch
        is journaled, so a node's epoch never goes backwards across restarts."""
        if epoch <= self.read_epoch():
            return
        tmp = self.dir / (EPOCH_FILE + ".tmp")
        with open(tmp, "w") as fh:
            fh.write(f"{epoch}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.dir / EPOCH_FILE)
        _fsync_dir(self.dir)


class Replay:
    """A machine moved forward through committed journal records, a bounded number of
    commands per ``step`` (the caller's loop must not stall on one repair). Read-only: it
    never touches the journal's files or the live machine. Made by ``Journal.replay_from``."""

    def __init__(
        self, machine: Any, records_from: Callable[[int], Iterator[tuple[int, bytes]]]
    ) -> None:
        self.machine = machine
        self._records_from = records_from
        self._records = records_from(machine.seq)
        self.done = False  # the last step reached the end of what is on disk (for now)
        self.replayed = 0  # commands replayed so far

    def step(self, budget: int) -> list[Event]:
        """Replay whole records until ``budget`` commands are spent or the journal ends; the
        events they produced. Raises JournalError on a hole (a record that does not start at
        the machine's seq: trimmed away, or a foreign file)."""
        out: list[Event] = []
        spent = 0
        self.done = False
        reopened = False
        while spent < budget:
            try:
                seq, payload = next(self._records)
            except StopIteration:
                if reopened:
                    self.done = True
                    break
                # records committed since this replay began: read on from where it stands
                reopened = True
                self._records = self._records_from(self.machine.seq)
                continue
            except OSError as exc:  # a segment removed by snapshot retention meanwhile
                raise JournalError(f"journal replay failed: {_reason(exc)}") from None
            if seq < self.machine.seq:
                continue  # covered by the snapshot
            if seq != self.machine.seq:
                raise JournalError(
                    f"journal record at seq {seq}, replay at {self.machine.seq}: "
                    "the records in between are no longer on disk"
                )
            cmds = unpackb(payload)
            for cmd in cmds:
                self.machine.apply(cmd, out)
            spent += len(cmds)
        self.replayed += spent
        return out


def read_commands(directory: str | Path) -> Iterator[tuple[int, Command]]:
    """Every journaled command still on disk with the seq before its record, oldest first
    (read-only)."""
    for path in sorted(Path(directory).glob("journal-*.log"), key=_seq_of):
        for seq, payload in iter_records(path):
            for cmd in unpackb(payload):
                yield seq, cmd


def inspect(
    directory: str | Path,
    markets: Mapping[str, Market] | None = None,
    machine: Machine = ENGINE,
    check: Callable[[Any], list[str]] | None = None,
) -> dict[str, Any]:
    """What is in a journal directory, and any damage, without changing anything.

    Record headers hold the seq *before* their commands, so ``first_seq``/``last_seq`` of a
    segment are not event seqs. The event seqs are ``first_event_seq``/``last_event_seq`` per
    segment and ``seq`` overall: the seq a recovery would reach (found by replaying from the
    newest valid snapshot with ``markets``, default the built-in table, into ``machine``: the
    one the shard that wrote the journal recovers with; ``seq`` is None and ``seq_error`` says
    why when recovery would refuse). ``check(machine)`` after that replay lists what is wrong
    with the state it reached (``checks``).
    """
    d = Path(directory)
    if not d.is_dir():
        raise JournalError(f"{d} is not a directory")
    markets = DEFAULT_MARKETS if markets is None else markets
    paths = sorted(d.glob("journal-*.log"), key=_seq_of)
    segs = []
    for path in paths:
        scan = SegmentScan(path)
        commands = sum(len(unpackb(payload)) for _, payload in iter_records(path, scan))
        segs.append(
            {
                "file": path.name,
                "bytes": scan.size,
                "records": scan.records,
                "commands": commands,
                "first_seq": scan.first_seq,
                "last_seq": scan.last_seq,
                "first_event_seq": None if scan.first_seq is None else scan.first_seq + 1,
                "last_event_seq": None,
                "damage": scan.damage,
                "torn_tail": f"{scan.size - scan.good_bytes} bytes at offset {scan.good_bytes}"
                if scan.torn
                else None,
            }
        )
    snaps = []
    for path in sorted(d.glob("snapshot-*.snap"), key=_seq_of):
        state = read_snapshot(path)
        snaps.append(
            {
                "file": path.name,
                "seq": _seq_of(path),
                "valid": state is not None,
                "orders": None if state is None else _open_orders(state),
            }
        )
    seq: int | None = None
    seq_error = None
    snap_seq = None
    checks: list[str] = []
    ends: dict[Path, int] = {}
    try:
        engine, snap_seq = _best_snapshot(d, markets, machine)
        # what recovery reads: not the segments the snapshot covers whole (their damage is
        # still reported per segment, but a restart does not refuse over it)
        _replay(engine, paths if snap_seq is None else uncovered(paths, snap_seq), ends)
        seq = engine.seq
        if check is not None:
            checks = check(engine)
    except JournalError as exc:
        seq_error = str(exc)
    # A segment's events end where the next segment's records begin (records are contiguous),
    # or where replay got to; a newest segment wholly covered by the snapshot ends at it (the
    # journal commits, snapshots, then starts a new segment).
    following: int | None = None
    for path, seg in zip(reversed(paths), reversed(segs), strict=True):
        if path in ends:
            seg["last_event_seq"] = ends[path]
        elif seg["records"]:
            if following is not None:
                seg["last_event_seq"] = following
            elif snap_seq is not None and seg["last_seq"] < snap_seq:
                seg["last_event_seq"] = snap_seq
        if seg["first_seq"] is not None:
            following = seg["first_seq"]
    return {
        "dir": str(d),
        "segments": segs,
        "snapshots": snaps,
        "records": sum(s["records"] for s in segs),
        "commands": sum(s["commands"] for s in segs),
        "seq": seq,
        "seq_error": seq_error,
        "checks": checks,
    }


def _open_orders(state: Mapping[str, Any]) -> int | None:
    """Open orders in a snapshot: an engine's books, or an account shard's held orders."""
    books = state.get("books")
    if isinstance(books, Mapping):
        return sum(len(b["bids"]) + len(b["asks"]) for b in books.values())
    orders = state.get("orders")
    return len(orders) if isinstance(orders, (list, tuple)) else None

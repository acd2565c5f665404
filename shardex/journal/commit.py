"""Group commit: commands are buffered as they are applied and written together, one record
(one write + one sync) per drained batch, on the caller's thread or on a writer thread.

With ``start_writer`` (what a shard uses for the ``batch`` and ``always`` policies) the write and
fsync of a group commit run on a writer thread (``os.write``/``os.fsync`` release the GIL), so
the caller matches the next batch while the previous one becomes durable. ``submit`` hands the
buffer over and returns a ticket; the writer makes batches durable strictly in ticket order,
one write + one fsync for all batches waiting together, and signals each completion on a pipe
the caller polls; ``durable`` says up to which ticket. A failed write stops the writer with
every batch from the failed one on still queued (nothing after a hole is ever written);
``retry`` tries them again in order.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from pathlib import Path

import msgpack

from shardex.engine.codes import Command
from shardex.journal.disk import OS_DISK, Disk, JournalUnavailable
from shardex.journal.records import MAX_RECORD, encode_records
from shardex.journal.segment import SegmentWriter

log = logging.getLogger("shardex.journal")


class GroupCommit(SegmentWriter):
    """The command buffer and the writer thread over a ``SegmentWriter``."""

    def __init__(
        self,
        directory: str | Path,
        fsync: str = "batch",
        segment_bytes: int = 64 << 20,
        max_record: int = MAX_RECORD,
        preallocate: int | None = None,
        disk: Disk = OS_DISK,
    ) -> None:
        super().__init__(directory, fsync, segment_bytes, max_record, preallocate, disk)
        self._buf: list[Command] = []
        self._seqs: list[int] = []  # engine seq before each buffered command (record headers)
        self._pack = msgpack.Packer(use_bin_type=True).pack
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

    def _encode(self) -> bytes:
        """The buffer as framed records, each payload at most ``max_record`` bytes."""
        return encode_records(self._pack, self._buf, self._seqs, self.max_record)

    def buffered(self) -> tuple[int, list[Command]] | None:
        """The commands added since the last commit and the seq before the first (None: none):
        what the next ``commit`` writes, which a primary ships to its standby."""
        if not self._buf:
            return None
        return self._seqs[0], list(self._buf)

    # -- the writer thread ----------------------------------------------------------------------

    def start_writer(self, preallocate: int | None = None) -> int:
        """Move writes and fsyncs to a writer thread; return the fd that becomes readable when
        batches become durable or the writer fails (poll it, then call ``completions``).
        ``preallocate``: zeros kept ahead of the last record (None: as constructed)."""
        if self._thread is not None:
            return self._signal_r
        self.hold_dir()  # (before the node serves: a second process on the directory stops here)
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

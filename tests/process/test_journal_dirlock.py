"""One writing process per journal directory (``shardex.journal.dirlock``): a second
process's journal on a directory another process writes is refused when it would write
(``hold_dir``: a node does it before recovery), naming the holder, while reading it stays
possible; the holder's death (kill -9) frees it; within one process a journal may be opened
again on the directory (the in-process cluster's restarted node) and the lock lasts until the
last closes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shardex.engine import DEFAULT_MARKETS
from shardex.journal import Journal, dirlock
from shardex.journal.dirlock import JournalInUse

HOLDER = """
import sys, time
from shardex.engine import DEFAULT_MARKETS
from shardex.journal import Journal
j = Journal(sys.argv[1], DEFAULT_MARKETS)
j.hold_dir()
print("held", flush=True)
time.sleep(60)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def _holder(directory: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)], env=_env(),
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _probe(directory: Path) -> subprocess.CompletedProcess:
    """Another process opens a journal on ``directory`` and exits at once."""
    code = HOLDER.replace("time.sleep(60)", "")
    return subprocess.run([sys.executable, "-c", code, str(directory)], capture_output=True,
                          text=True, timeout=60, env=_env())  # fmt: skip


def test_a_second_process_is_refused_until_the_holder_dies(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(dirlock, "WAIT_S", 0.2)
    proc = _holder(tmp_path)
    try:
        j = Journal(tmp_path, DEFAULT_MARKETS)
        assert j.recover().engine.seq == 0  # (reading a live directory: no lock needed)
        for write in (j.hold_dir, j.start_writer):
            with pytest.raises(JournalInUse, match=f"another process \\(pid {proc.pid}\\)"):
                write()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    j.hold_dir()  # (a killed holder leaves no stale lock)
    j.close()


def test_one_process_may_open_it_again_and_holds_it_until_the_last_close(tmp_path: Path) -> None:
    first = Journal(tmp_path, DEFAULT_MARKETS)
    first.hold_dir()
    second = Journal(tmp_path, DEFAULT_MARKETS)  # (a node dropped unclosed, its successor)
    second.hold_dir()
    first.close()
    probe = _probe(tmp_path)
    assert probe.returncode != 0 and "JournalInUse" in probe.stderr, probe
    second.close()
    probe = _probe(tmp_path)
    assert probe.returncode == 0 and probe.stdout.strip() == "held", probe


def test_a_successor_waits_for_a_killed_holder_to_let_go(tmp_path: Path) -> None:
    """kill -9 frees the lock only once the holder's last thread has exited (its main thread
    may already be a zombie: CI's restarted shard once found the lock held); a journal that
    asks meanwhile waits for it (up to ``WAIT_S``) instead of refusing."""
    import threading

    proc = _holder(tmp_path)
    killer = threading.Timer(0.5, lambda: proc.send_signal(signal.SIGKILL))
    killer.start()
    try:
        j = Journal(tmp_path, DEFAULT_MARKETS)
        j.hold_dir()  # (held by the other process for the first ~0.5 s)
        j.close()
    finally:
        killer.join()
        proc.wait(timeout=30)

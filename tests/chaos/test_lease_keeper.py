"""A lease renewed by a keeper process (``shardex.leasekeeper``), with real processes and a
real Redis: kill -9 of the holder takes its keeper with it and the lease expires; a SIGSTOPped
holder loses the lease (its heartbeat stops, so its keeper stops renewing) and resumes fenced,
then learns the lease is someone else's; kill -9 of the keeper alone leaves the holder
leading, renewed by its own thread again. The holder is ``tests/support/keeper_child.py``
(ttl 400 ms, keeper stall 0.5 s). No timing is asserted: every wait is bounded and polled.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from shardex.lease import Lease, connect
from tests.support.redis import RedisServer
from tests.support.wait import wait_until

BOUND_S = 30.0
KEY = "shardex:lease:0"


class Holder:
    """The child process and the JSON lines it prints."""

    def __init__(self, url: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.keeper_child", url],
                                     stdout=subprocess.PIPE, env=env)  # fmt: skip
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def expect(self, cond: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        end = time.monotonic() + BOUND_S
        while time.monotonic() < end:
            try:
                msg = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if cond(msg):
                return msg
        raise AssertionError("the holder never said it")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = RedisServer(str(tmp_path))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def holder(redis_url: str) -> Iterator[tuple[Holder, int]]:
    h = Holder(redis_url)
    try:
        kept = h.expect(lambda m: m.get("kept") is True)  # its keeper renews
        yield h, kept["pid"]
    finally:
        if h.proc.poll() is None:
            h.proc.kill()
        h.proc.wait()


def test_kill_of_the_holder_takes_its_keeper(redis_url: str, holder: tuple[Holder, int]) -> None:
    h, keeper = holder
    r = redis.Redis.from_url(redis_url)
    h.proc.kill()
    h.proc.wait()
    wait_until(lambda: _gone(keeper), BOUND_S, "the keeper outlived its leader")
    wait_until(lambda: r.get(KEY) is None, BOUND_S, "the lease is still renewed")


def test_stopped_holder_loses_the_lease_and_resumes_fenced(
    redis_url: str, holder: tuple[Holder, int]
) -> None:
    h, _ = holder
    other = Lease(connect(redis_url), 0, "other", "tcp://127.0.0.1:2", 400, 75, thread=False)
    os.kill(h.proc.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: other.try_acquire(0, 0)[0] > 0, BOUND_S, "the lease never came free")
    finally:
        os.kill(h.proc.pid, signal.SIGCONT)
    resumed = h.expect(lambda m: "resumed" in m)
    assert resumed["valid"] is False  # fenced before it did anything
    h.expect(lambda m: m.get("lost") is True)
    assert h.proc.wait(timeout=BOUND_S) == 3
    other.release()


def test_kill_of_the_keeper_alone_falls_back_to_the_thread(
    redis_url: str, holder: tuple[Holder, int]
) -> None:
    h, keeper = holder
    r = redis.Redis.from_url(redis_url)
    os.kill(keeper, signal.SIGKILL)
    h.expect(lambda m: m.get("keeper") is False and m.get("valid") is True)
    took = r.get(KEY)
    time.sleep(1.0)  # (several ttls: the lease must have been renewed meanwhile)
    assert r.get(KEY) == took and r.pttl(KEY) > 0
    assert h.proc.poll() is None

"""What a restart costs and what it says meanwhile: snapshot cadence, replay progress, and the
``recovering`` registration a shard sends its routers while it replays.

A shard (engine or account tier) rebuilds its state from its newest snapshot plus the journal
after it. Snapshots are taken every ``snapshot_every`` journaled commands, every
``snapshot_interval`` seconds when something changed, and at a clean stop (SIGTERM/SIGINT), so
a restart after a clean stop replays nothing and one after a crash at most ``snapshot_every``
commands. While it replays, ``Progress`` turns the bytes read into commands done, an estimated
total and seconds left (logged about once a second), and ``Beacon`` sends each router a hello
holding that estimate, so the router answers ``recovering`` (with it) instead of ``shard
unavailable``, and ``shardex status`` shows it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import zmq

from shardex.auth import KeyFile
from shardex.clock import REAL, Clock
from shardex.net.roles import recovery_beacon
from shardex.wire.link import encode_hello
from shardex.wire.transport import send_frames

log = logging.getLogger("shardex.recovery")

SNAPSHOT_EVERY = 100_000  # journaled commands: ~1.5 s of engine replay on a 2-core box
SNAPSHOT_INTERVAL = 60.0  # seconds
BEACON_EVERY_S = 0.5  # recovering hellos: the router forgets the state 3 s after the last
FIRST_BEAT_S = 1.0  # ... the first one once a recovery has taken this long
LOG_EVERY_S = 1.0
LOADING, REPLAYING = "loading its newest snapshot", "replaying the journal after it"


def _env(name: str, default: float, kind: type) -> Any:
    raw = os.environ.get(name, "")
    try:
        value = kind(raw) if raw else default
    except ValueError:
        log.warning("%s=%r is not a number: using %s", name, raw, default)
        return default
    return value if value > 0 else default


def snapshot_every_default() -> int:
    """Journaled commands between snapshots: ``SHARDEX_SNAPSHOT_EVERY`` or 100,000."""
    return int(_env("SHARDEX_SNAPSHOT_EVERY", SNAPSHOT_EVERY, int))


def snapshot_interval_default() -> float:
    """Seconds between snapshots when something changed: ``SHARDEX_SNAPSHOT_INTERVAL`` or 60."""
    return float(_env("SHARDEX_SNAPSHOT_INTERVAL", SNAPSHOT_INTERVAL, float))


class Progress:
    """A replay's progress from (commands done, bytes read) against the bytes to read. Pure:
    the caller passes the clock. Commands per byte are measured as it goes, so the total is
    an estimate that firms up; seconds left come from the byte rate so far."""

    def __init__(self, what: str, start: float, total_bytes: int = 0) -> None:
        self.what = what
        self.total_bytes = max(0, total_bytes)
        self.start = start
        self.done = 0
        self.bytes = 0
        self.now = start
        self.logged = start
        self.finished = False
        self.logged_done = -1  # commands replayed when the last line was logged
        self.phase = LOADING  # then REPLAYING once the journal after the snapshot is read

    def update(self, done: int, bytes_read: int, total_bytes: int, now: float) -> None:
        self.total_bytes = max(0, total_bytes)
        self.done, self.bytes, self.now = done, min(bytes_read, self.total_bytes), now
        self.phase = REPLAYING

    def estimate(self) -> dict[str, Any]:
        """``{"what", "done", "total", "eta_s", "elapsed_s"}``: commands replayed, the estimated
        total (None until anything was read) and seconds left (None until a rate is known)."""
        elapsed = max(0.0, self.now - self.start)
        total = eta = None
        if self.bytes > 0:
            total = max(self.done, round(self.done * self.total_bytes / self.bytes))
            if elapsed > 0:
                eta = round((self.total_bytes - self.bytes) * elapsed / self.bytes, 1)
        if self.finished:
            total, eta = self.done, 0.0
        return {"what": self.what, "phase": self.phase, "done": self.done, "total": total,
                "eta_s": eta, "elapsed_s": round(elapsed, 1)}  # fmt: skip

    def line(self) -> str:
        e = self.estimate()
        total = "?" if e["total"] is None else f"~{e['total']:,}"
        left = "?" if e["eta_s"] is None else f"~{e['eta_s']:.0f}"
        return (f"{self.what}: replayed {e['done']:,} of {total} journaled commands, "
                f"{left} s left ({e['elapsed_s']:.0f} s so far)")  # fmt: skip

    def log_due(self, now: float) -> bool:
        if now - self.logged >= LOG_EVERY_S:
            self.logged = now
            return True
        return False


def describe(state: Any) -> str:
    """A router's ``recovering`` text for a shard's estimate (any shape: it came off the wire)."""
    if not isinstance(state, dict):
        return "recovering"
    done, total, eta = state.get("done"), state.get("total"), state.get("eta_s")
    parts = [str(state.get("what", "shard"))[:40]]
    if state.get("phase") == LOADING:
        elapsed = state.get("elapsed_s")
        since = f" ({elapsed:.0f} s so far)" if isinstance(elapsed, int | float) else ""
        return ", ".join(parts) + f", {LOADING}{since}"
    if type(done) is int:
        parts.append(f"replayed {done:,}" + (f" of ~{total:,}" if type(total) is int else ""))
    if isinstance(eta, int | float) and not isinstance(eta, bool):
        parts.append(f"~{eta:.0f} s left")
    return ", ".join(parts)


class Beacon:
    """Sends ``recovering`` hellos to every router while a replay runs (its own thread and
    sockets; the replay holds the process's main thread). ``hello(progress)`` builds the
    payload; ``sockets()`` opens one DEALER per router (CURVE-keyed like the shard's links).
    ``clock``: the node's (``shardex.clock``), for the progress's "now" while a snapshot
    loads; the beats themselves are paced by the thread's own waits."""

    def __init__(
        self,
        sockets: Callable[[], list[Any]],
        hello: Callable[[dict[str, Any]], bytes],
        progress: Progress,
        clock: Clock = REAL,
    ) -> None:
        self._open = sockets
        self._hello = hello
        self.progress = progress
        self._mono = clock.monotonic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recovery-beacon", daemon=True)

    def __enter__(self) -> Beacon:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        if self._stop.wait(FIRST_BEAT_S):
            return  # a quick recovery (most starts) registers as usual, without a beacon
        socks = self._open()
        try:
            while not self._stop.is_set():
                if self.progress.phase == LOADING:
                    self.progress.now = self._mono()  # (no updates while it loads)
                payload = self._hello(self.progress.estimate())
                for s in socks:
                    try:
                        send_frames(s, [b"", b"HELLO", payload])  # as the node's own HELLO
                    except Exception:
                        pass  # a router not reading: the next beat tries again
                self._stop.wait(BEACON_EVERY_S)
        finally:
            for s in socks:
                s.close(0)


def timed_progress(progress: Progress, clock: Clock = REAL) -> Callable[[int, int, int], None]:
    """The journal's replay callback: updates ``progress`` and logs about once a second."""
    mono = clock.monotonic

    def step(done: int, bytes_read: int, total_bytes: int) -> None:
        now = mono()
        progress.update(done, bytes_read, total_bytes, now)
        if total_bytes and progress.log_due(now):  # (nothing after the snapshot: no line)
            log.info("%s", progress.line())
            progress.logged_done = done

    return step


RECOVERING_ID = b"recovering-"  # (the router's name for a beacon's identity prefix, insecure)


def recover_visibly(
    recover: Callable[[Callable[[int, int, int], None]], Any],
    what: str,
    ctx: Any,
    router: str | None,
    identity: str,
    key: KeyFile | None,
    hello: dict[str, Any],
    clock: Clock = REAL,
) -> Any:
    """``recover(progress)`` with its progress logged and, when the process has routers
    (``router``: comma-separated endpoints), announced to each of them as a ``recovering``
    hello (``hello``: the registration fields; ``identity``: the link's name, insecure mode).
    ``clock``: the node's (``shardex.clock``). Returns what ``recover`` returns."""
    progress = Progress(what, clock.monotonic())
    step = timed_progress(progress, clock)
    endpoints = [e for e in (router or "").split(",") if e]
    if not endpoints:
        return _finish(progress, recover(step))

    def sockets() -> list[Any]:
        out = []
        for endpoint in endpoints:
            out.append(recovery_beacon(ctx, zmq, endpoint, RECOVERING_ID + identity.encode(), key))
        return out

    def payload(estimate: dict[str, Any]) -> bytes:
        return encode_hello({**hello, "recovering": estimate})

    with Beacon(sockets, payload, progress, clock):
        return _finish(progress, recover(step))


def _finish(progress: Progress, result: Any) -> Any:
    progress.finished = True
    if progress.done and progress.done != progress.logged_done:  # (not the same line twice)
        log.info("%s", progress.line())
    return result

"""``shardex up``: start the router and N engine shards as child processes and keep them alive.

The supervisor is deliberately dumb: each component is an ordinary ``shardex <component>``
process (the same commands the Procfile runs), so what runs under ``shardex up`` is exactly what
runs under honcho or systemd. It restarts a child that dies (loudly, with backoff) and on
Ctrl-C/SIGTERM stops everything: SIGTERM first, SIGKILL after a grace period.

Identity: with a keys dir (``shardex up``'s default, DATA_DIR/keys) every child gets
``--keys-dir`` (router, engines and bridge authenticate with CURVE keys from it) and the embedded
Redis gets ACL users from it (``shardex.redisauth``); without one every child gets
``--insecure``, so no child ever falls back to no authentication by omission.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from shardex.kinds import Plan, spawns
from shardex.kinds.redis import REDIS_NOISE, embedded_redis_argv, redis_binary
from shardex.layout import Layout

__all__ = ["REDIS_NOISE", "Child", "Supervisor", "build_children", "embedded_redis_argv",
           "forward_lines", "port_free", "redis_binary", "run_filtered"]  # fmt: skip

log = logging.getLogger("shardex.up")


def forward_lines(src: BinaryIO, dst: BinaryIO, drop: Sequence[bytes]) -> None:
    """Copy ``src`` to ``dst`` line by line until EOF, leaving out lines containing any ``drop``."""
    for line in iter(src.readline, b""):
        if not any(d in line for d in drop):
            dst.write(line)
            dst.flush()
    src.close()


def _start_filtered(argv: list[str], drop: Sequence[bytes]) -> subprocess.Popen:
    proc = subprocess.Popen(
        argv, preexec_fn=_child_setup, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out = sys.stdout.buffer
    pump = threading.Thread(target=forward_lines, args=(proc.stdout, out, drop), daemon=True)
    pump.start()
    proc.pump = pump  # type: ignore[attr-defined]  # joined after exit: the last lines matter
    return proc


def run_filtered(argv: list[str], drop: Sequence[bytes] = REDIS_NOISE) -> int:
    """Run ``argv`` as a child whose output is forwarded minus ``drop`` lines; SIGINT/SIGTERM go
    to the child; returns its exit code (``shardex redis`` under honcho)."""
    proc = _start_filtered(argv, drop)

    def forward(signum, frame):  # noqa: ARG001 - signal handler signature
        if proc.poll() is None:
            proc.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    rc = proc.wait()
    proc.pump.join(5)  # type: ignore[attr-defined]  # the server's last words (shutdown lines)
    return rc if rc >= 0 else 128 - rc


SNAPSHOT_GRACE = 60.0  # a shard's shutdown snapshot (seconds at most; the snapshot is sub-second
# on a quiet box, but several seconds of CPU contention must not cost the next start a replay)
STOP_FIRST_GRACE = 20.0  # a child stopped first (the market maker: its cancels, at most ~15 s)


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    history: list[float] = field(default_factory=list)
    drop: tuple[bytes, ...] = ()  # output lines to leave out (see REDIS_NOISE)
    # seconds between SIGTERM and SIGKILL at shutdown (None: the supervisor's); shards get
    # ``SNAPSHOT_GRACE``: they snapshot while stopping, so the next start replays nothing
    grace: float | None = None
    # stopped and waited for before the others (``Spawn.stop_first``: the market maker,
    # which cancels its orders on the way out and needs the cluster for it)
    first: bool = False

    def __post_init__(self) -> None:
        if self.grace is None and self.name.startswith(("engine.", "accounts.")):
            self.grace = SNAPSHOT_GRACE
        if self.grace is None and self.first:
            self.grace = STOP_FIRST_GRACE

    def start(self) -> None:
        if self.drop:
            self.proc = _start_filtered(self.argv, self.drop)
        else:
            self.proc = subprocess.Popen(self.argv, preexec_fn=_child_setup)
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.proc.pid)


def _child_setup() -> None:
    """In the child before exec: its own process group, so a terminal's Ctrl-C reaches only the
    supervisor (which then stops children in order instead of racing their deaths); and, on
    Linux, SIGTERM when the supervisor dies, so a killed supervisor leaves no orphans."""
    os.setpgid(0, 0)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def build_children(
    layout: Layout,
    markets_file: str | None,
    max_backlog: int,
    pin: bool,
    log_level: str,
    data_dir: str | None = None,
    fsync: str = "batch",
    redis: str | None = "embedded",
    pub_hwm: int | None = None,
    keys_dir: str | None = None,
    replicas: int = 1,
    mm: bool = False,
    without: frozenset[str] = frozenset(),
    coord: str | None = None,
) -> list[Child]:
    """The processes of a cluster, in start order, as the process descriptions
    (``shardex.kinds``) make them. ``redis``: "embedded" (start one), a URL (use it), or None
    (no Redis and no bridge). ``keys_dir``: the key store every process authenticates with;
    None: an ``--insecure`` cluster (said to every child). ``replicas`` 2: each engine and
    account shard runs as two ``--role auto`` processes (``engine.I`` and ``engine.I.r1``)
    whose lease lives in that Redis; 1: one process each. ``mm``: also the market maker;
    ``without``: optional kinds left out (``shardex.kinds.OPTIONAL``); ``coord``: the leases'
    store when not that Redis (``etcd://h:p,h:p``)."""
    return children_of(Plan(layout, markets_file, max_backlog, pin, log_level, data_dir, fsync,
                            redis, pub_hwm, keys_dir, replicas, mm=mm, without=without,
                            coord=coord))  # fmt: skip


def children_of(plan: Plan) -> list[Child]:
    """The processes of ``plan``'s cluster, in start order: every choice of the plan
    (``--durability``, ``--lease-ms`` too) reaches the children."""
    if plan.replicas > 1 and ((plan.redis is None and not plan.coord) or plan.data_dir is None):
        raise ValueError("--replicas 2 needs Redis or --coord (for the lease) and a data dir")
    exe = [sys.executable, "-m", "shardex.cli", "--log-level", plan.log_level]
    return [
        Child(spawn.name, spawn.argv or [*exe, *kind.argv(spawn.values)], drop=spawn.drop,
              first=spawn.stop_first)  # fmt: skip
        for kind, spawn in spawns(plan)
    ]


class Supervisor:
    def __init__(self, children: list[Child], grace: float = 5.0) -> None:
        self.children = children
        self.grace = grace
        self.stopping = False
        # called once per loop turn (``shardex.node.scaler``: reshard's requests); may change
        # ``children``
        self.tick: Callable[[], None] | None = None

    def run(self, on_ready=None) -> int:
        def stop(signum, frame):  # noqa: ARG001
            self.stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        for c in self.children:
            c.start()
        if on_ready is not None and not self.stopping:
            on_ready()
        while not self.stopping:
            if self.tick is not None:
                self.tick()
            now = time.monotonic()
            for c in self.children:
                if c.proc is None:
                    if now >= c.next_start:
                        c.start()
                    continue
                rc = c.proc.poll()
                if rc is None:
                    continue
                how = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
                # Restart at once the first time, then back off if it keeps dying.
                c.history = [t for t in c.history if now - t < 60] + [now]
                delay = 0.0 if len(c.history) <= 1 else min(10.0, 0.5 * 2 ** (len(c.history) - 2))
                c.restarts += 1
                log.error(
                    "!!! %s (pid %d) DIED with %s; restarting in %.1fs (restart #%d)",
                    c.name,
                    c.proc.pid,
                    how,
                    delay,
                    c.restarts,
                )
                c.proc = None
                c.next_start = now + delay
            time.sleep(0.05)
        return self.shutdown()

    def shutdown(self) -> int:
        log.info("stopping %d processes", len(self.children))
        first = [c for c in self.children if c.first]
        self._stop(first)
        self._stop([c for c in self.children if c not in first])
        log.info("all stopped")
        return 0

    def stop_children(self, children: list[Child]) -> None:
        """Stop ``children`` now (as at shutdown), the rest running on."""
        self._stop(children)

    def _stop(self, children: list[Child]) -> None:
        """SIGTERM to ``children`` (the last started first), then wait for each within its
        grace; SIGKILL past it."""
        for c in reversed(children):
            if c.proc is not None and c.proc.poll() is None:
                c.proc.terminate()
        start = time.monotonic()
        for c in children:
            if c.proc is None:
                continue
            grace = self.grace if c.grace is None else c.grace
            try:
                c.proc.wait(max(0.0, start + grace - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s (pid %d) ignored SIGTERM for %.0fs: killing it",
                    c.name,
                    c.proc.pid,
                    grace,
                )
                c.proc.kill()
                c.proc.wait()

"""A lease keeper: the leader's lease renewed by a small process of its own, outside its GIL.

Why: under overload the renewer *thread* (``Lease.start_renewer``) ran 0.7–1.4 s late, because
the leader's loop thread held the GIL while the kernel had preempted it; a 250–400 ms lease
was then lost although the leader was alive (docs/failover.md, "Choosing the lease ttl"). The
keeper is a separate process of the same interpreter, so only the scheduler delays it.

Opt-in: ``SHARDEX_LEASE_KEEPER=process`` (default ``thread``: as before). Each replica starts
its keeper at start-up (``KeeperHandle``: imports and the store's connection are paid while
standing by); the leader hands it the lease's token once it leads, through the keeper's stdin.

Shared memory (``SLOTS``, an unlinked 64-byte file both processes map, 8-byte aligned words):
the leader's loop writes its heartbeat (CLOCK_MONOTONIC, host-wide) every turn; the keeper
renews while that heartbeat is younger than ``stall_s`` and writes back ``valid_until`` = the
renew's send time + ttl·(1 − margin) (``deadline_after``: the rule the thread uses), under the
token's generation. The leader acts only while ``now < max(its own deadline, valid_until)``:
the safety argument of ``shardex.lease`` is unchanged (each deadline is one a renew's send time
earns; a later one of two is still one of them). The keeper writes ``valid_until = 0`` and then
the generation when it takes a new token, and the leader reads the generation first: x86's
in-order stores then never show it an older token's deadline under the new generation.

Death: the keeper gets SIGKILL when the leader dies (``PR_SET_PDEATHSIG``, and it checks its
parent each turn), so a killed leader's lease expires as before. A keeper that dies alone is
noticed by the leader within a renew period (``KeeperHandle.alive``); the leader logs an ALERT
and renews from its own thread again (no failover for a lost helper). A frozen leader
(SIGSTOP) keeps its lease for ``stall_s`` (the keeper sees the heartbeat stop) and then
ttl: with the thread it was the ttl alone, since the thread froze with it.
"""

from __future__ import annotations

import ctypes
import json
import logging
import mmap
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shardex.leasetime import RenewStats

log = logging.getLogger("shardex.leasekeeper")

ENV = "SHARDEX_LEASE_KEEPER"
MODES = ("thread", "process")
# word offsets (bytes) in the shared page
BEAT, VALID, GEN, STATE = 0, 8, 16, 24
SIZE = 64
IDLE, READY, RENEWING, LOST = 0, 1, 2, 3  # STATE: the keeper's, as it last wrote it


def keeper_mode(env: dict[str, str] | None = None) -> str:
    """``SHARDEX_LEASE_KEEPER`` (thread|process); raises ValueError on anything else so that a
    typo never silently runs the mode nobody asked for."""
    mode = (os.environ if env is None else env).get(ENV, "thread").strip() or "thread"
    if mode not in MODES:
        raise ValueError(f"{ENV} must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def deadline_after(sent: float, ttl_ms: int, margin: float) -> float:
    """Until when a renew (or acquire) sent at ``sent`` lets the leader act: the store can
    expire the lease no earlier than ``ttl`` after it ran the step, which is after ``sent``."""
    return sent + ttl_ms / 1000 * (1 - margin)


class Slots:
    """The shared page: named 8-byte words on an mmap (both sides use this class)."""

    def __init__(self, fd: int) -> None:
        self.m = mmap.mmap(fd, SIZE)

    def get(self, off: int) -> float:
        return struct.unpack_from("d", self.m, off)[0]

    def put(self, off: int, value: float) -> None:
        struct.pack_into("d", self.m, off, value)


@dataclass
class KeeperCore:
    """The keeper's decisions, pure: no clock, no process (``step`` is handed ``now``).

    ``store``: the lease's store (``coord.base.LeaseStore``); ``slots``: where the heartbeat
    is read and ``valid_until`` written."""

    store: Any
    slots: Slots
    ttl_ms: int
    renew_s: float
    margin: float
    stall_s: float
    label: str
    token: Any = None
    epoch: int = 0
    gen: float = 0.0
    planned: float = 0.0
    stalled: bool = False
    stats: RenewStats = field(default_factory=RenewStats)

    def take(self, gen: float, token: Any, sent: float, epoch: int = 0) -> None:
        """Renew ``token`` from now on; ``sent``: the send time of its last renew/acquire."""
        self.slots.put(VALID, 0.0)
        self.slots.put(GEN, gen)  # (after VALID: see the module docstring)
        self.slots.put(STATE, RENEWING)
        self.token, self.gen, self.planned, self.stalled = token, gen, sent + self.renew_s, False
        self.epoch = epoch
        self.stats = RenewStats()
        self.stats.granted(sent)

    def stop(self) -> None:
        """The leader gives the lease up (or lost it): renew no more."""
        if self.token is not None and self.stats.renews:
            log.info("lease %s renewals: %s", self.label, self.stats.summary())
        self.token = None
        self.slots.put(STATE, READY)

    def due_in(self, now: float) -> float | None:
        """Seconds until the next renew is due (None: nothing to renew)."""
        return None if self.token is None else max(0.0, self.planned - now)

    def step(self, now: float, clock: Callable[[], float]) -> str:
        """One due renew: "stalled" (the leader's heartbeat is older than ``stall_s``: no
        renew, so a wedged leader hands over), "renewed", "failed" (the store could not be
        asked: ``valid_until`` stays), "lost" (the store says the lease is not ours)."""
        if now - self.slots.get(BEAT) > self.stall_s:
            if not self.stalled:
                log.error("ALERT %s: the loop has not ticked for %.1f s: no more lease "
                          "renewals (a standby takes over)", self.label, self.stall_s)  # fmt: skip
            self.stalled = True
            self.planned = now + self.renew_s
            return "stalled"
        self.stalled = False
        planned, sent = self.planned, clock()
        try:
            ok: bool | None = bool(self.store.renew(self.token, self.ttl_ms))
        except Exception:  # the store down or slow: keep the old deadline, try next period
            ok = None
        self.stats.renewed(planned, sent, clock(), ok is not False)
        self.planned = sent + self.renew_s
        if ok is None:
            return "failed"
        if not ok:
            self.slots.put(STATE, LOST)
            log.warning("lease %s renewals: %s", self.label, self.stats.summary())
            self.token = None
            return "lost"
        self.slots.put(VALID, deadline_after(sent, self.ttl_ms, self.margin))
        if self.stats.renews == 1:  # (as the thread logs it: a new leader's first renew)
            log.info("lease %s epoch %d: first renew after taking it %.1f ms late", self.label,
                     self.epoch, max(0.0, sent - planned) * 1000)  # fmt: skip
        return "renewed"


# -- the leader's side ---------------------------------------------------------------------------


def _child_setup() -> None:
    """In the keeper before exec: SIGKILL when the leader (its parent) dies, so it can never
    renew a dead leader's lease."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class KeeperView:
    """What the leader reads and writes in the shared page (``KeeperHandle``; a test's
    in-process keeper shares it): its heartbeat out, the keeper's deadline and verdict in."""

    def __init__(self, slots: Slots) -> None:
        self.slots = slots
        self.gen = 0.0  # the generation of the token last handed over

    def beat(self, now: float) -> None:
        self.slots.put(BEAT, now)

    def valid_until(self) -> float:
        """The keeper's deadline for the current token (0.0: none yet)."""
        if self.slots.get(GEN) != self.gen:  # (read first: see the module docstring)
            return 0.0
        return self.slots.get(VALID)

    def lost(self) -> bool:
        return self.slots.get(GEN) == self.gen and self.slots.get(STATE) == LOST


class KeeperHandle(KeeperView):
    """The leader's handle on its keeper process: the shared page and the keeper's stdin."""

    def __init__(self, url: str, keys_dir: str | None, name: str, label: str, ttl_ms: int,
                 renew_ms: int, margin: float, stall_s: float) -> None:  # fmt: skip
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        with tempfile.TemporaryFile(dir=shm) as f:  # (unlinked: nothing left after a kill)
            f.truncate(SIZE)
            super().__init__(Slots(f.fileno()))
            cfg = {"url": url, "keys_dir": keys_dir, "name": name, "label": label,
                   "ttl_ms": ttl_ms, "renew_ms": renew_ms, "margin": margin,
                   "stall_s": stall_s, "fd": f.fileno()}  # fmt: skip
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shardex.leasekeeper", json.dumps(cfg)],
                stdin=subprocess.PIPE, pass_fds=(f.fileno(),), preexec_fn=_child_setup,
            )  # fmt: skip

    def ready(self) -> bool:
        """Connected and waiting for a token (or renewing one)."""
        return self.alive() and self.slots.get(STATE) in (READY, RENEWING, LOST)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _send(self, msg: dict[str, Any]) -> bool:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
            self.proc.stdin.flush()
            return True
        except (OSError, ValueError):  # (dead keeper: the leader notices via ``alive``)
            return False

    def take(self, token: Any, sent: float, beat: float, epoch: int = 0) -> bool:
        """Hand the keeper the lease's ``token`` (last renewed/acquired at ``sent``)."""
        self.gen += 1
        self.beat(beat)
        return self._send({"gen": self.gen, "token": token, "sent": sent, "epoch": epoch})

    def stop(self, wait_s: float = 1.0) -> None:
        """Stop renewing; wait up to ``wait_s`` for the keeper to say so (it logs its renewals'
        summary then: a leader that exits right after would kill it first)."""
        if not self._send({"stop": True}):
            return
        end = time.monotonic() + wait_s
        while self.alive() and self.slots.get(STATE) == RENEWING and time.monotonic() < end:
            time.sleep(0.005)

    def close(self) -> None:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        if self.alive():
            self.proc.kill()
        self.proc.wait()


# -- the keeper process --------------------------------------------------------------------------


def raise_priority() -> str:
    """Run ahead of the shards if allowed: SCHED_RR, else nice −10, else as started (what was
    got is returned and logged; failing is silent otherwise)."""
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
        return "SCHED_RR 1"
    except (OSError, AttributeError):
        pass
    try:
        os.nice(-10 - os.nice(0))
        return f"nice {os.nice(0)}"
    except OSError:
        return f"nice {os.nice(0)} (unchanged)"


def _command(core: KeeperCore, line: bytes) -> None:
    msg = json.loads(line)
    if msg.get("stop"):
        core.stop()
    else:
        core.take(msg["gen"], msg["token"], msg["sent"], msg.get("epoch", 0))


def main(argv: list[str]) -> int:
    """The keeper: connect, say READY, then renew what the leader hands it until stdin ends
    or the leader is gone."""
    cfg = json.loads(argv[0])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s keeper: %(message)s")  # fmt: skip
    parent = os.getppid()
    from shardex.coord.connect import connect, lease_store

    store = lease_store(connect(cfg["url"], cfg["keys_dir"]), cfg["name"])
    slots = Slots(cfg["fd"])
    core = KeeperCore(store, slots, cfg["ttl_ms"], cfg["renew_ms"] / 1000, cfg["margin"],
                      cfg["stall_s"], cfg["label"])  # fmt: skip
    got = raise_priority()
    log.info("lease %s keeper (pid %d) runs at %s", cfg["label"], os.getpid(), got)
    slots.put(STATE, READY)
    clock, stdin, buf = time.monotonic, sys.stdin.fileno(), b""
    while os.getppid() == parent:
        wait = core.due_in(clock())
        readable, _, _ = select.select([stdin], [], [], 0.5 if wait is None else wait)
        if readable:
            chunk = os.read(stdin, 4096)
            if not chunk:
                break  # (the leader closed us: it is done)
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                _command(core, line)
            continue
        if core.token is not None and clock() >= core.planned:
            core.step(clock(), clock)
    core.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

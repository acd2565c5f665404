"""What ``bench/failover.py`` reads from a cluster's log: each new leader's FAILOVER line and
how late its first lease renew ran, and a killed replica's restart, recovery and return to the
in-sync set (the supervisor's and the replicas' own lines, by time stamp)."""

from __future__ import annotations

import re
from pathlib import Path

FAILOVER_LINE = re.compile(
    rb"FAILOVER (\S+) leads .* at epoch (\d+) .*monotonic took=([\d.]+) hello=([\d.]+)"
)


def failover_lines(log_path: str, tier: str = "engine") -> dict[int, tuple[str, float, float]]:
    """The new leaders' FAILOVER log lines of one tier (node ``shard-I.rR`` or
    ``accounts-J.rR``): epoch → (node, took, hello), monotonic times (one system-wide clock on
    Linux, the same as this process's ``time.monotonic``)."""
    prefix = "accounts-" if tier == "accounts" else "shard-"
    out = {}
    for m in FAILOVER_LINE.finditer(Path(log_path).read_bytes()):
        if m[1].decode().startswith(prefix):
            out[int(m[2])] = (m[1].decode(), float(m[3]), float(m[4]))
    return out


FIRST_RENEW_LINE = re.compile(
    rb"lease (shard \d+|accounts-\d+) epoch (\d+): first renew after taking it ([\d.]+) ms late"
)


def first_renew_late(log_path: str, tier: str = "engine") -> dict[int, float]:
    """How late each new leader's first lease renew ran (ms, by epoch), from its log line:
    a renewer that starts only after the promotion's set-up runs late by that set-up."""
    label = b"accounts-0" if tier == "accounts" else b"shard 0"
    return {int(m.group(2)): float(m.group(3))
            for m in FIRST_RENEW_LINE.finditer(Path(log_path).read_bytes())
            if m.group(1) == label}  # fmt: skip


LOG_TIME = rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "
DIED_LINE = re.compile(LOG_TIME + rb".*!!! \S+ \(pid (\d+)\) DIED .*restarting in ([\d.]+)s", re.M)
STANDBY_LINE = re.compile(LOG_TIME + rb"\S+\[(\d+)\] \S+ (\S+) starts as standby at seq (\d+)",
                          re.M)  # fmt: skip
IN_SYNC_LINE = re.compile(LOG_TIME + rb".*in-sync set now \S+: (\S+) caught up at seq", re.M)
MOVED_LINE = re.compile(rb"moving the journal to")
TRUNCATED_LINE = re.compile(rb"truncated its divergent tail")


def _wall(stamp: bytes) -> float:
    """A log line's asctime (local time, ms) as a Unix time."""
    from datetime import datetime

    return datetime.strptime(stamp.decode(), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def rejoin_times(text: bytes, pid: int, node: str, killed_at: float) -> dict[str, float | None]:
    """For the replica ``node`` whose process ``pid`` was killed at Unix time ``killed_at``:
    seconds from the kill to its restart (the supervisor's delay), from the restart to the
    new process standing by (journal recovery, divergence handled), and from standing by to
    the leader's "caught up" (back in the in-sync set)."""
    restart = next((_wall(m[1]) + float(m[3]) for m in DIED_LINE.finditer(text)
                    if int(m[2]) == pid), None)  # fmt: skip
    standby = next((_wall(m[1]) for m in STANDBY_LINE.finditer(text)
                    if m[3].decode() == node and int(m[2]) != pid
                    and _wall(m[1]) >= killed_at), None)  # fmt: skip
    in_sync = next((_wall(m[1]) for m in IN_SYNC_LINE.finditer(text)
                    if m[2].decode() == node and _wall(m[1]) >= (standby or killed_at)),
                   None)  # fmt: skip

    def span(a: float | None, b: float | None) -> float | None:
        return round(b - a, 3) if a is not None and b is not None else None

    return {
        "restart_s": span(killed_at, restart),
        "recover_s": span(restart, standby),
        "to_in_sync_s": span(standby, in_sync),
        "restart_to_in_sync_s": span(restart, in_sync),
    }

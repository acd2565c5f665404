"""CPU seconds (user + sys) of a cluster's processes, by role, from /proc.

On a shared 2-core box latency and throughput drift with whatever else runs, but the CPU a
process spends per acked order barely does: it is the stable before/after number. Linux only;
elsewhere every snapshot is empty and the callers print nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, user+sys seconds) of ``pid``, or None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / TICK


def _role(pid: int) -> str:
    """The shardex subcommand a process runs (``router``, ``shard``, ``accounts`` …)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    for k, w in enumerate(words):
        if w.endswith("shardex.cli") or w.endswith("/shardex"):
            rest = words[k + 1 :]
            for j, arg in enumerate(rest):  # the first word that is no option nor its value
                prev = rest[j - 1] if j else ""
                if not arg.startswith("-") and not (prev.startswith("-") and "=" not in prev):
                    return arg
            return "?"
    return Path(words[0]).name if words else "?"


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (one /proc scan)."""
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            st = _stat(int(d.name))
            if st is not None:
                kids.setdefault(st[0], []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


def snapshot(root: int) -> dict[int, tuple[str, float]]:
    """pid → (role, CPU seconds so far) for the tree under ``root``."""
    snap = {}
    for pid in descendants(root):
        st = _stat(pid)
        if st is not None:
            snap[pid] = (_role(pid), st[1])
    return snap


Snapshot = dict[int, tuple[str, float]]


def per_role(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds spent between two snapshots, summed by role (processes alive in both)."""
    out: dict[str, float] = {}
    for pid, (role, cpu) in after.items():
        if pid in before:
            out[role] = out.get(role, 0.0) + cpu - before[pid][1]
    return out

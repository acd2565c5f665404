"""The clock seam holds: no module the simulator runs reads the time itself.

The deterministic simulator runs the production nodes on a ``VirtualClock``; that only works if
every node, and every component a node is made of, reads the time through its transport's
``clock`` (``net.clock``, ``shardex.clock``) and never calls ``time.monotonic``, ``time.time``,
``time.perf_counter`` or ``time.sleep`` itself. This reads the source (every module of the
package but the few that only real processes run) and names each direct read; the few that
are right where they are stand in ``ALLOWED``, each with why.
"""

from __future__ import annotations

import ast
from pathlib import Path

SHARDEX = Path(__file__).resolve().parents[2] / "shardex"

# What a module must not take from ``time`` (the ``_ns`` twins too): the Clock's three reads
# and sleeping (a node waits in its poll, or on the event loop's timers).
FORBIDDEN = {"monotonic", "time", "perf_counter", "sleep"}
FORBIDDEN |= {f"{name}_ns" for name in FORBIDDEN - {"sleep"}}

# Off the simulator's path: only real processes run these (paths relative to shardex/).
OFF_PATH = {
    "cli": "the command line parses options and starts processes; the simulator builds its "
    "nodes from the same parsed configs (shardex.inproc)",
    "tools": "loadgen, replay and the other tools drive a cluster of real processes",
    "node/supervisor.py": "``shardex up``'s supervisor starts and waits for child processes",
    "node/scaler.py": "``shardex up``'s supervisor paces its look at reshard's request file",
    "clock.py": "the seam itself: REAL is the time module's functions",
    "candles": "the candles worker is a Redis client process of its own (it reads the trades "
    "streams the bridge wrote); the simulator checks those streams, not the worker",
    "history": "the history writer is a database client process of its own (it reads the "
    "streams); the simulator checks the streams, not the writer",
    "feed": "the price feed is a client process of its own (index prices on the wall clock, "
    "from its sources); the simulator checks the engines' journaled index commands, not the "
    "feed",
    "client/market_data.py": "a reader of candles in Redis for the user: its default end is "
    "the user's own wall clock, never a node's",
    "gateway": "the gateway is a process of its own serving people and bots (heartbeats, slow "
    "clients, a signed request's receive window are the wall clock's); the simulator checks "
    "the streams and the engines it reads, not the gateway",
}
# Files still to be threaded through a clock (drop an entry once its file reads the time
# through one). The lease and the standby loop (lease.py, node/standby.py, failover.py,
# leader.py) are: they read the node's clock now.
PENDING: set[str] = set()

# (module, function, what) → why it may read the time itself.
ALLOWED = {
    ("journal/dirlock.py", "_locked", "time.monotonic"):
        "a real directory's lock held by another OS process (a killed one's last thread still "
        "exiting): the simulator's disk locks nothing, so its path never gets here",
    ("journal/dirlock.py", "_locked", "time.sleep"):
        "the same bounded wait's poll (every 50 ms, at most WAIT_S = 5 s)",
    ("leasekeeper.py", "KeeperHandle.stop", "time.monotonic"):
        "a leader's bounded wait at release for its keeper process to stop: only with "
        "SHARDEX_LEASE_KEEPER=process, which a simulated lease (thread=False) never uses",
    ("leasekeeper.py", "KeeperHandle.stop", "time.sleep"):
        "the same wait's poll: a real keeper process only",
    ("leasekeeper.py", "main", "time.monotonic"):
        "the keeper process's own loop (a process of its own, never on the simulator's path; "
        "its decisions, KeeperCore, take the time as an argument)",
    ("node/sequenced.py", "SequencedNode.turn", "time.sleep"):
        "a fenced leader's back-off between turns in its own process (``not "
        "zmq.in_process``); a node sharing its process (the in-memory scheduler) never sleeps",
    ("endpoints.py", "mark_stopped", "time.time"):
        "``shardex up`` stamps its endpoints file at a clean stop (``now`` may be given): "
        "the supervisor's, never a node's",
    ("auth.py", "Registry.lookup", "time.monotonic"):
        "paces the key registry's re-read on a miss: a secure cluster's only, and the "
        "in-memory transport runs --insecure (no CURVE)",
    ("journal/segment.py", "<module>", "from time import perf_counter"):
        "a segment's write and fsync durations, for the metrics only (never a decision); the "
        "journal's disk is the simulator's disk seam",
    ("node/standby.py", "Standby._idle", "time.sleep"):
        "a standby process with nobody to follow and no front port to poll waits for its "
        "next lease check; on an in-process transport (the in-memory scheduler) it never "
        "sleeps",
    ("client/_sync/io.py", "SyncIO._sleep", "time.sleep"):
        "the blocking client pauses on real sockets in real time (the simulator runs "
        "AsyncClient, whose pause is the event loop's)",
}


def reads(tree: ast.AST) -> list[tuple[str, str, int]]:
    """(function, what, line) of every direct use of a ``FORBIDDEN`` name of ``time`` in
    ``tree``: ``time.X`` (under any alias of the module) or ``from time import X``."""
    aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
               for a in node.names if a.name == "time"}  # fmt: skip
    found: list[tuple[str, str, int]] = []

    def visit(node: ast.AST, scope: tuple[str, ...]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            scope = (*scope, node.name)
        where = ".".join(scope) or "<module>"
        if isinstance(node, ast.ImportFrom) and node.module == "time":
            found.extend([(where, f"from time import {a.name}", node.lineno)
                          for a in node.names if a.name in FORBIDDEN])  # fmt: skip
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr in FORBIDDEN):  # fmt: skip
            found.append((where, f"time.{node.attr}", node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(tree, ())
    return found


def on_path() -> list[tuple[str, Path]]:
    """(path under shardex/, file) of every module the simulator may run."""
    out = []
    for path in sorted(SHARDEX.rglob("*.py")):
        rel = path.relative_to(SHARDEX).as_posix()
        if rel in OFF_PATH or rel.split("/")[0] in OFF_PATH or rel in PENDING:
            continue
        out.append((rel, path))
    return out


def direct_reads() -> dict[tuple[str, str, str], list[int]]:
    """(module, function, what) → lines, over every module on the simulator's path."""
    out: dict[tuple[str, str, str], list[int]] = {}
    for rel, path in on_path():
        for where, what, line in reads(ast.parse(path.read_text(encoding="utf-8"))):
            out.setdefault((rel, where, what), []).append(line)
    return out


def test_no_module_on_the_simulators_path_reads_the_time_itself() -> None:
    found = direct_reads()
    unexplained = [f"shardex/{rel}:{lines[0]} {where}: {what}"
                   for (rel, where, what), lines in found.items()
                   if (rel, where, what) not in ALLOWED]  # fmt: skip
    assert not unexplained, (
        "read the time through the node's clock (self.clock / net.clock, or a component's "
        "``clock: Clock = REAL`` keyword), or add an entry with its reason to ALLOWED:\n"
        + "\n".join(unexplained)
    )


def test_every_exception_is_still_needed_and_says_why() -> None:
    found = direct_reads()
    stale = [key for key in ALLOWED if key not in found]
    assert not stale, f"these no longer read the time directly: drop them from ALLOWED: {stale}"
    assert all(len(why) > 40 for why in ALLOWED.values())
    for rel in (*OFF_PATH, *PENDING):  # (a renamed module must not silently leave the check)
        assert (SHARDEX / rel).exists() or (SHARDEX / f"{rel}.py").exists(), rel


def test_the_check_sees_every_form_of_a_direct_read() -> None:
    src = (
        "import time\nimport time as _t\nfrom time import sleep, process_time\n"
        "from shardex.clock import REAL\n"
        "class A:\n    def f(self):\n        return time.monotonic() + _t.perf_counter_ns()\n"
        "    stamp = time.time\n"
        "def g(clock=REAL):\n    return clock.monotonic() + REAL.time() + time.process_time()\n"
    )
    assert sorted((w, what) for w, what, _ in reads(ast.parse(src))) == [
        ("<module>", "from time import sleep"),
        ("A", "time.time"),
        ("A.f", "time.monotonic"),
        ("A.f", "time.perf_counter_ns"),
    ]
    assert "node/shard.py" in dict(on_path()) and "cli/up.py" not in dict(on_path())

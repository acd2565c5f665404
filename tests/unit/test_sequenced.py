"""``SequencedNode``: the one turn both tiers run, pinned in its order (pure: no sockets, a
fake poller and replica), and the node tier's shape (no import cycle dodged inside a
function, module and function sizes)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from shardex.net import ZMQ
from shardex.node.sequenced import SequencedNode

SHARDEX = Path(__file__).resolve().parents[2] / "shardex"
# every module of the sequenced-node runtime and of the transport under it: the node package
# (its bridge subpackage is another process's) and shardex/net
RUNTIME_MODULES = sorted(
    [*(SHARDEX / "node").glob("*.py"), *(SHARDEX / "net").glob("*.py")], key=str
)


class _Lease:
    def __init__(self) -> None:
        self.ok = True

    def valid(self) -> bool:
        return self.ok


class _Replica:
    def __init__(self, lease: _Lease) -> None:
        self.lease = lease

    def tick(self, now: float) -> None:
        pass

    def sync_behind(self) -> bool:
        return False  # (``--durability both``: nothing synced after the release)


class _Poller:
    def __init__(self, node: _Node, turns: list[bool]) -> None:
        self.node, self.turns = node, turns

    def poll(self, ms: int) -> list[Any]:
        self.node.calls.append(f"poll({ms})")
        ready = self.turns.pop(0)
        if not self.turns:
            self.node.stop = True  # (this is the last turn)
        return [(object(), 1)] if ready else []  # (socket, POLLIN) pairs, as pyzmq's


class _Node(SequencedNode):
    """Records each hook the loop calls, in order."""

    LABEL = "test node"

    def __init__(self, turns: list[bool], replica: Any = None) -> None:
        self.cfg = type("Cfg", (), {"index": 0})()
        self.zmq = ZMQ  # (the transport: constants, errors, in_process)
        self.zap = None
        self.links = []
        self.outboxes = []
        self.replica = replica
        self.hello_msg = b""
        self.calls: list[str] = []
        self.init_loop_state(0)
        self.poller = _Poller(self, turns)

    def __getattribute__(self, name: str) -> Any:
        hooks = ("start", "after_pump", "read_links", "after_links", "read_requests",
                 "flush", "after_flush", "release_acked", "housekeeping", "close")  # fmt: skip
        if name in hooks:
            object.__getattribute__(self, "calls").append(name)
            return lambda *args: None
        return object.__getattribute__(self, name)

    def journal_held(self) -> bool:
        return False


def test_one_turn_in_the_documented_order() -> None:
    node = _Node([True])
    node.run()
    assert node.calls == [
        "start", "poll(200)", "after_pump", "read_links", "after_links", "read_requests",
        "flush", "after_flush", "housekeeping", "close",
    ]  # fmt: skip


def test_a_turn_with_nothing_ready_reads_and_commits_nothing() -> None:
    node = _Node([False])
    node.run()
    assert node.calls == ["start", "poll(200)", "after_pump", "after_links", "housekeeping",
                          "close"]  # fmt: skip


def test_a_replicated_leader_releases_at_each_tick_and_polls_shorter() -> None:
    node = _Node([True], _Replica(_Lease()))
    node.run()
    assert node.calls[:3] == ["start", "release_acked", "poll(20)"]
    assert "read_requests" in node.calls


def test_past_the_lease_deadline_a_leader_refuses_and_takes_nothing() -> None:
    lease = _Lease()
    real_refuse = []

    class Fenced(_Node):
        def refuse(self) -> None:
            real_refuse.append(1)
            lease.ok = True  # the next turn leads again
            self.calls.append("refused")

    node = Fenced([True], _Replica(lease))
    lease.ok = False
    node.run()
    assert real_refuse == [1]
    calls = node.calls
    assert calls.index("refused") < calls.index("poll(20)")  # nothing read while fenced
    assert calls.count("read_requests") == 1  # only in the turn after the lease came back


def _function_imports(path: Path) -> list[str]:
    """``import`` statements inside a function body of ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    found.append(f"{path.name}:{inner.lineno}")
    return found


def test_the_runtime_modules_import_at_module_level_only() -> None:
    """No import placed inside a function (to dodge a cycle or otherwise)."""
    found = [hit for path in RUNTIME_MODULES for hit in _function_imports(path)]
    assert found == []


def test_the_runtime_modules_and_functions_stay_small() -> None:
    """At most 600 lines per module, 60 per function."""
    too_big = []
    for path in RUNTIME_MODULES:
        m = path.stem
        text = path.read_text()
        if text.count("\n") > 600:
            too_big.append(f"{m}.py: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if n > 60:
                    too_big.append(f"{m}.py: {node.name} {n} lines")
    assert too_big == []

"""``bench/compare.py``'s whole flow, every phase, with stand-ins for what it starts.

The real-process smoke (``tests/bench/test_bench_smoke.py``) runs one phase against real
clusters of a real worktree; the three phases' bookkeeping (rounds alternating ref/current, each
metric once per round and side, the echo measured with the latency phase, the overload rate
given or derived from the saturation phase, per-role CPU per order, the ratios, the report's
table) is checked here, in this process, with stand-ins for the worktree, the clusters, the
load generators and the echo: no process, no port, no sleep. Every stand-in takes exactly the
arguments the real one takes (``inspect.signature(...).bind``), so a call the real code could
not accept fails here too.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import compare  # noqa: E402
import scaling  # noqa: E402


class FakeProc:
    """What ``cpu()`` reads of a cluster: its ``shardex up`` pid."""

    def __init__(self, pid: int) -> None:
        self.pid = pid


class Stage:
    """Stand-ins for everything ``compare.compare`` starts, and what each was asked to do."""

    def __init__(self, saturation: dict[str, float]) -> None:
        self.saturation = saturation  # acked/s per tree name ("ref", "current")
        self.log: list[tuple[Any, ...]] = []
        self.cpu_s = 0.0
        self.live: list[Any] = []
        stage = self

        class Worktree:
            def __init__(self, ref: str) -> None:
                self.path, self.short = Path("/nonexistent/ref"), ref[:8]
                stage.log.append(("worktree", ref))

            def __enter__(self) -> Any:
                return self

            def __exit__(self, *exc: object) -> None:
                stage.log.append(("worktree removed",))

        class TreeCluster:
            def __init__(self, tree: Path, shards: int, **kw: Any) -> None:
                inspect.signature(scaling.TreeCluster).bind(tree, shards, **kw)
                self.tree, self.proc = tree, None
                self.endpoints, self.key = [f"tcp://{tree.name}:1"], f"{tree.name}.key"

            def start(self) -> Any:
                self.proc = FakeProc(len(stage.log) + 100)
                stage.live.append(self)
                stage.log.append(("cluster", self.tree.name))
                return self

            def stop(self) -> None:
                stage.live.remove(self)

        class Echo:
            endpoint = "tcp://echo:1"

            def __init__(self) -> None:
                stage.live.append(self)

            def stop(self) -> None:
                stage.live.remove(self)

        self.Worktree, self.TreeCluster, self.Echo = Worktree, TreeCluster, Echo

    def loadgen(self, tree: Path, endpoints: list[str], key: str, **kw: Any) -> dict[str, Any]:
        inspect.signature(scaling.loadgen).bind(tree, endpoints, key, **kw)
        assert endpoints == [f"tcp://{tree.name}:1"] and key == f"{tree.name}.key"
        self.log.append(("loadgen", tree.name, kw.get("rate"), kw["window"]))
        acked = self.saturation[tree.name] if kw.get("rate") is None else kw["rate"] / 2
        return {"acked_per_s": acked, "sent_per_s": kw.get("rate") or acked, "errors": 7,
                "timeouts": 3}  # fmt: skip

    def openloop(self, tree: Path, endpoint: str, key: str, rate: float, seconds: float,
                 decode: bool) -> dict[str, Any]:  # fmt: skip
        name = "echo" if endpoint == self.Echo.endpoint else tree.name
        assert decode == (name != "echo")
        self.log.append(("openloop", name, rate))
        return {"p50_us": {"ref": 900, "current": 600, "echo": 500}[name], "p99_us": 2000,
                "errors": 0, "lost": 0}  # fmt: skip

    def snapshot(self, root: int) -> dict[int, tuple[str, float]]:
        self.cpu_s += 0.5  # every measurement: 0.5 s of CPU by the engine of ``root``
        return {root: ("engine", self.cpu_s)}


@pytest.fixture
def stage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Stage:
    s = Stage({"ref": 1000.0, "current": 2000.0})
    monkeypatch.setattr(compare, "ROOT", tmp_path / "current")
    for name in ("Worktree", "TreeCluster", "Echo"):
        monkeypatch.setattr(compare, name, getattr(s, name))
    for name in ("loadgen", "openloop", "snapshot"):
        monkeypatch.setattr(compare, name, getattr(s, name))
    monkeypatch.setattr(compare, "check_imports", lambda tree: s.log.append(("imports", tree)))
    monkeypatch.setattr(compare, "current_label", lambda: "current (test)")
    monkeypatch.setattr(compare.time, "sleep", lambda _s: None)  # the pauses between rounds
    return s


def test_every_phase_alternates_the_sides_and_reports_each_metric_per_round(
    stage: Stage, capsys: pytest.CaptureFixture[str]
) -> None:
    args = compare.parse_args(["HEAD", "--rounds", "2", "--seconds", "2", "--rate", "300"])
    rep = compare.compare(args)
    assert not stage.live  # every cluster and the echo stopped again
    assert stage.log[0] == ("worktree", "HEAD") and stage.log[-1] == ("worktree removed",)
    # each phase: fresh clusters of both trees, then rounds alternating ref / current (A/B/A/B)
    runs = [e for e in stage.log if e[0] in ("cluster", "loadgen", "openloop")]
    sat = [("loadgen", "ref", None, 8), ("loadgen", "current", None, 8)]
    over = [("loadgen", "ref", 3000.0, 1), ("loadgen", "current", 3000.0, 1)]
    lat = [("openloop", "ref", 300.0), ("openloop", "current", 300.0), ("openloop", "echo", 300.0)]
    fresh = [("cluster", "ref"), ("cluster", "current")]
    warm = [("loadgen", "ref", None, 8), ("loadgen", "current", None, 8)]  # unrecorded
    assert runs == [*fresh, *warm, *sat, *sat, *fresh, *warm, *over, *over, *fresh, *warm,
                    *lat, *lat]  # fmt: skip
    # the overload's offered rate: 3 x the ref's median saturation, the same for both sides
    assert rep["overload_offered_per_s"] == 3000
    raw = rep["raw"]
    for side, acked in (("ref", 1000.0), ("current", 2000.0)):
        assert raw[side]["saturation"] == [acked, acked]
        assert raw[side]["goodput"] == [1500.0, 1500.0]
        assert raw[side]["overload_refused"] == [4, 4] and raw[side]["overload_timeouts"] == [3, 3]
        assert len(raw[side]["p50_us"]) == 2
        # 0.5 s of engine CPU per measurement over its acked orders
        assert raw[side]["cpu_us/order saturation engine"] == [0.5e6 / (acked * 2)] * 2
        assert raw[side]["cpu_us/msg overload engine"] == [0.5e6 / (1500 * 2 + 4)] * 2
        assert raw[side]["cpu_us/order 5k engine"] == [0.5e6 / 600] * 2
    assert raw["echo"] == {"p50_us": [500, 500], "p99_us": [2000, 2000]}
    r = rep["ratios"]
    assert r["saturation current/ref"]["median"] == 2.0
    assert r["goodput current/ref"]["median"] == 1.0
    assert r["p50 current/echo"]["median"] == 1.2 and r["p50 ref/echo"]["median"] == 1.8
    assert r["cpu_us/order saturation engine current/ref"]["median"] == 0.5
    assert rep["labels"] == {"ref": "HEAD (HEAD)", "current": "current (test)"}
    rep = json.loads(json.dumps(rep))  # what ``--json`` prints, read back
    compare.print_report(rep)
    table = capsys.readouterr().out
    assert "| saturation, acked orders/s | 1,000 / 1,000 / 1,000 | 2,000 / 2,000 / 2,000 | - |" in (
        table
    )
    assert "| p50 current/echo | 1.20 / 1.20 / 1.20 | ≤ 1.2 |" in table
    assert "| cpu_us/order saturation engine |" in table


def test_a_subset_of_phases_measures_only_those(stage: Stage) -> None:
    args = compare.parse_args(["HEAD", "--phases", "overload", "--overload-rate", "900",
                               "--rounds", "1", "--warmup", "0"])  # fmt: skip
    rep = compare.compare(args)
    assert not stage.live
    runs = [e for e in stage.log if e[0] in ("cluster", "loadgen", "openloop")]
    assert runs == [("cluster", "ref"), ("cluster", "current"), ("loadgen", "ref", 900.0, 1),
                    ("loadgen", "current", 900.0, 1)]  # fmt: skip
    assert rep["overload_offered_per_s"] == 900
    assert set(rep["ratios"]) == {"goodput current/ref", "cpu_us/order overload engine current/ref",
                                  "cpu_us/msg overload engine current/ref"}  # fmt: skip
    assert "saturation" not in rep["raw"]["ref"] and rep["raw"]["echo"] == {}


class FakeLoadgen:
    """A ``shardex loadgen`` process that has run: its argv kept, a JSON report printed."""

    started: list[list[str]] = []

    def __init__(self, argv: list[str], **_kw: Any) -> None:
        FakeLoadgen.started.append(argv)
        self.returncode = 0

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        report = {"acked": 500, "sent": 600, "seconds": 2.5, "errors": {"overloaded": 90},
                  "timeouts": 10, "latency_us": {"p50": 800, "p99": 3000}}  # fmt: skip
        return json.dumps(report) + "\n", ""

    def poll(self) -> int:
        return 0


def test_the_overload_load_splits_its_rate_over_processes_the_real_command_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``scaling.loadgen`` with a rate (only the overload phase gives one): each process sends
    its share, and the argv parses with the real ``shardex loadgen`` command's options."""
    from shardex.cli import main

    FakeLoadgen.started = []
    monkeypatch.setattr(scaling.subprocess, "Popen", FakeLoadgen)
    r = scaling.loadgen(Path("/nonexistent/tree"), ["tcp://127.0.0.1:5555", "tcp://127.0.0.1:5565"],
                        "k.key", procs=3, batch=1, concurrency=1, window=1, seconds=2,
                        symbols=2, rate=900.0, timeout=4.0)  # fmt: skip
    assert r["acked_per_s"] == 750 and r["sent_per_s"] == 900 and r["errors"] == 270
    assert r["timeouts"] == 30 and r["p99_us"] == 3000
    assert len(FakeLoadgen.started) == 3
    for k, argv in enumerate(FakeLoadgen.started):
        assert argv[:6] == [sys.executable, "-m", "shardex.cli", "--log-level", "WARNING",
                            "loadgen"]  # fmt: skip
        group = main.make_context("shardex", argv[3:6])
        opts = main.get_command(group, "loadgen").make_context("loadgen", argv[6:]).params
        assert opts["rate"] == 300.0 and opts["timeout"] == 4.0 and opts["duration"] == 2.0
        assert opts["endpoint"] == ("tcp://127.0.0.1:5555", "tcp://127.0.0.1:5565")[k % 2]

"""The benches charge the cluster's CPU to orders only: with the account tier each measured
``shardex loadgen`` used to fund its 100 accounts first (a balance read each, deposits where
short) after the bench had read the processes' CPU, so the funding's CPU was divided over the
run's orders. ``bench/paths.py`` and ``bench/compare.py`` now fund first (``scaling.funded``),
read the CPU after it, and run the measured loadgen with ``--no-fund``. In-process, with
stand-ins for the clusters and load generators (no process, no port); ~0.1 s of CPU."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import compare  # noqa: E402
import paths  # noqa: E402
import scaling  # noqa: E402


class Trace:
    """Stand-ins for funding, CPU snapshots and load generators, logging their order."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []

    def funded(self, tree: Path, endpoints: list[str], key: str, symbols: int) -> None:
        inspect.signature(scaling.funded).bind(tree, endpoints, key, symbols)
        self.log.append(("funded",))

    def snapshot(self, root: int) -> dict[int, tuple[str, float]]:
        self.log.append(("cpu read",))
        return {root: ("accounts", 0.0)}

    def loadgen(self, tree: Path, endpoints: list[str], key: str, **kw: Any) -> dict[str, Any]:
        inspect.signature(scaling.loadgen).bind(tree, endpoints, key, **kw)
        self.log.append(("loadgen", kw.get("fund", True)))
        return {"acked_per_s": 100.0, "sent_per_s": 100.0, "errors": 0, "timeouts": 0,
                "p50_us": 1, "p99_us": 2}  # fmt: skip


def _patch(monkeypatch: pytest.MonkeyPatch, module: Any, trace: Trace) -> None:
    for name in ("funded", "snapshot", "loadgen"):  # (a bench without ``funded``: not called)
        monkeypatch.setattr(module, name, getattr(trace, name), raising=False)


class _Cluster:
    def __init__(self, extra: list[str]) -> None:
        self.extra, self.proc = extra, type("P", (), {"pid": 1})()
        self.endpoints, self.key = ["tcp://c:1"], "c.key"


@pytest.mark.parametrize("load", ["closed-1", "open-1k"])
def test_paths_funds_the_account_tier_before_reading_the_cpu(
    monkeypatch: pytest.MonkeyPatch, load: str
) -> None:
    trace = Trace()
    _patch(monkeypatch, paths, trace)
    monkeypatch.setattr(paths, "per_role", lambda before, after: {"accounts": 0.0})
    args = paths.parse_args(["--seconds", "1"])
    paths.measure(Path("/nonexistent"), _Cluster(["--accounts", "1"]), load, args)
    # (the first read: the funding's own CPU, printed; the run's starts after the funding)
    want = [("cpu read",), ("funded",), ("cpu read",), ("loadgen", False), ("cpu read",)]
    assert trace.log == want, trace.log
    trace.log.clear()  # without the tier: nothing to fund, the loadgen as before
    if load == "closed-1":
        paths.measure(Path("/nonexistent"), _Cluster([]), load, args)
        assert trace.log == [("cpu read",), ("loadgen", True), ("cpu read",)], trace.log


def test_compare_funds_the_account_tier_before_reading_the_cpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    trace = Trace()
    _patch(monkeypatch, compare, trace)

    class Tree:
        def __init__(self, tree: Path, shards: int, **kw: Any) -> None:
            self.tree, self.proc = tree, type("P", (), {"pid": 1})()
            self.endpoints, self.key = ["tcp://c:1"], "c.key"

        def start(self) -> Any:
            return self

        def stop(self) -> None:
            pass

    class Worktree:
        def __init__(self, ref: str) -> None:
            self.path, self.short = tmp_path / "ref", ref

        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr(compare, "Worktree", Worktree)
    monkeypatch.setattr(compare, "TreeCluster", Tree)
    monkeypatch.setattr(compare, "check_imports", lambda tree: None)
    monkeypatch.setattr(compare, "per_role", lambda before, after: {"accounts": 0.0})
    monkeypatch.setattr(compare.time, "sleep", lambda _s: None)
    args = compare.parse_args(["HEAD", "--phases", "saturation", "--rounds", "1", "--warmup",
                               "0", "--accounts", "1"])  # fmt: skip
    compare.compare(args)
    one = [("funded",), ("cpu read",), ("loadgen", False), ("cpu read",)]
    assert trace.log == one * 2, trace.log  # each side: funded, then the CPU read, then orders

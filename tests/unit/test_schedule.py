"""The suite's file order for pytest-xdist's worksteal (tests/support/schedule.py)."""

from __future__ import annotations

import random

import pytest

from tests.support.schedule import DEFAULT_S, MEASURED_S, file_order, slice_sizes


def _slices(order: list[str], counts: dict[str, int], workers: int) -> list[list[str]]:
    """The tests (as file names, one per test) each worker is dealt first, as worksteal does."""
    tests = [name for name in order for _ in range(counts[name])]
    out, start = [], 0
    for size in slice_sizes(len(tests), workers):
        out.append(tests[start : start + size])
        start += size
    return out


@pytest.mark.parametrize("total, workers", [(831, 3), (831, 4), (10, 3), (2, 3), (7, 1)])
def test_slice_sizes_deal_every_test_once_as_evenly_as_worksteal(total, workers):
    sizes = slice_sizes(total, workers)
    assert sum(sizes) == total and len(sizes) == workers
    assert max(sizes) - min(sizes) <= 1
    assert sizes[0] == total // workers  # the first worker gets the floor, as worksteal


def test_one_worker_runs_the_longest_files_first():
    files = [("a.py", 3), ("b.py", 1), ("c.py", 10)]
    assert file_order(files, 1, {"b.py": 50}) == ["b.py", "c.py", "a.py"]  # c: 10 x DEFAULT_S


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_each_worker_gets_an_even_share_of_the_long_files(workers):
    """Longest first alone put every long file in the first worker's slice; here each gets some."""
    rng = random.Random(workers)
    long = {f"long{k}.py": float(rng.randrange(40, 140)) for k in range(12)}
    files = [(name, rng.randrange(2, 16)) for name in long]
    files += [(f"short{k}.py", rng.randrange(1, 30)) for k in range(50)]  # under 15 s
    counts = dict(files)
    order = file_order(files, workers, long)
    assert sorted(order) == sorted(counts)  # every file once
    shares = []
    for tests in _slices(order, counts, workers):
        shares.append(sum(long.get(n, DEFAULT_S * counts[n]) / counts[n] for n in tests))
    biggest = max(long.values())
    assert max(shares) - min(shares) <= biggest, shares  # within one file of even
    firsts = {tests[0] for tests in _slices(order, counts, workers)}
    top = sorted(long, key=long.__getitem__, reverse=True)[:workers]
    assert firsts == set(top)  # each worker starts on one of the longest


def test_a_slice_runs_its_longest_files_first_and_keeps_each_file_whole():
    files = [(f"f{k}.py", 1 + k % 7) for k in range(40)]
    seconds = {f"f{k}.py": float(k) for k in range(0, 40, 3)}
    counts = dict(files)
    order = file_order(files, 3, seconds)
    for tests in _slices(order, counts, 3):
        names = list(dict.fromkeys(tests))
        weights = [seconds.get(n, DEFAULT_S * counts[n]) for n in names]
        assert weights == sorted(weights, reverse=True)
        assert all(tests.count(n) == counts[n] for n in names)  # no file split here
    assert file_order(files, 3, seconds) == order  # the same on every worker (xdist checks)


def test_measured_names_are_test_files_of_the_suite():
    from pathlib import Path

    tests = Path(__file__).resolve().parents[1]
    on_disk = {p.name for p in tests.glob("*/test_*.py")}
    assert set(MEASURED_S) <= on_disk, set(MEASURED_S) - on_disk


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_files_that_share_a_cluster_stay_together_in_one_slice(workers):
    """A group of ``together`` (one shared cluster per worker) is dealt as one file: its
    members adjacent, in the group's order, within one worker's slice."""
    files = [(f"f{k}.py", 1 + k % 5) for k in range(30)]
    files[7:7] = [("b.py", 3), ("x.py", 2)]
    files.append(("a.py", 2))
    seconds = {"a.py": 40.0, "b.py": 30.0, "x.py": 45.0, "f3.py": 50.0}
    counts = dict(files)
    order = file_order(files, workers, seconds, together=[("a.py", "b.py", "gone.py")])
    assert sorted(order) == sorted(counts)
    at = order.index("a.py")
    assert order[at + 1] == "b.py"  # adjacent, in the group's order
    slices = _slices(order, counts, workers)
    holders = [k for k, tests in enumerate(slices) if {"a.py", "b.py"} & set(tests)]
    assert len(holders) == 1  # one worker runs both (and starts their cluster once)
    assert all(slices[holders[0]].count(n) == counts[n] for n in ("a.py", "b.py"))
    if workers == 1:  # their summed 70 s rank them first, before f3.py's 50 and x.py's 45
        assert order[:4] == ["a.py", "b.py", "f3.py", "x.py"]


def test_the_groups_name_files_of_the_suite():
    from pathlib import Path

    from tests.support.schedule import TOGETHER

    on_disk = {p.name for p in Path(__file__).resolve().parents[1].glob("*/test_*.py")}
    assert {name for group in TOGETHER for name in group} <= on_disk

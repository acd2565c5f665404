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

"""The test helpers themselves: ports per xdist worker, and test files that stand alone."""

from __future__ import annotations

import ast
import socket
from pathlib import Path

import pytest

from tests.support import ports
from tests.support.wait import wait_until

TESTS = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 8])
def test_worker_regions_are_disjoint_and_below_the_ephemeral_range(monkeypatch, count: int):
    """Two xdist workers can never hand out the same port, and no worker hands out a port
    of the kernel's ephemeral range (an outgoing connection may take it before the bind)."""
    monkeypatch.setattr(ports, "ephemeral_low", lambda: 32768)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(count))
    regions = []
    for index in range(count):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{index}")
        regions.append(ports.region())
    for (lo, hi), (lo2, _) in zip(regions, regions[1:], strict=False):
        assert lo < hi <= lo2
    assert regions[0][0] >= ports.FLOOR and regions[-1][1] <= 32768
    assert all(hi - lo > ports.SPAN for lo, hi in regions)


def test_layouts_and_ports_stay_in_the_workers_region_and_are_not_reused(monkeypatch):
    """Every port of a layout (replicas' and account tier's included) lies in this worker's
    region; a port handed out lately is not handed out again, even when nothing binds it yet
    (a standby binds its ports only once promoted)."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    monkeypatch.setattr(ports, "_recent", type(ports._recent)(maxlen=64))
    lo, hi = ports.region()
    seen: set[int] = set()
    for _ in range(10):
        layout = ports.free_layout(2, accounts=1)
        used = {*layout.ports(), *layout.replica_ports()}
        assert lo <= min(used) and max(used) < hi
        assert not used & seen
        seen |= used
    singles = {ports.free_port() for _ in range(20)}
    assert len(singles) == 20 and not singles & seen
    assert all(lo <= p < hi for p in singles)


def test_a_bound_port_is_never_handed_out(monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "1")
    taken = ports.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", taken))
        s.listen()
        monkeypatch.setattr(ports, "_recent", type(ports._recent)(maxlen=64))  # forget it
        monkeypatch.setattr(ports._rng, "randrange", lambda a, b: taken)  # and offer only it
        with pytest.raises(RuntimeError, match="no free port"):
            ports.free_port()
        assert ports.listening(taken)


def test_wait_until_returns_the_value_or_names_what_it_waited_for():
    calls = iter([0, 0, 7])
    assert wait_until(lambda: next(calls), 5, "the third value") == 7
    with pytest.raises(TimeoutError, match="the never value"):
        wait_until(lambda: False, 0.05, "the never value")


def test_no_test_file_imports_another():
    """Shared helpers live in tests/support: a test file imports no other test file (nor
    conftest's helpers, except ``require``, a fixture-like capability check)."""
    offenders = []
    for path in sorted(TESTS.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                names = {a.name for a in node.names}
                if _test_module(mod) or (
                    mod in ("conftest", "tests.conftest") and names - {"require", "STRICT_ENV"}
                ):
                    offenders.append(f"{path.name}:{node.lineno} from {mod} import {names}")
            elif isinstance(node, ast.Import):
                offenders += [f"{path.name}:{node.lineno} import {a.name}" for a in node.names
                              if _test_module(a.name)]  # fmt: skip
    assert not offenders, offenders


def _test_module(mod: str) -> bool:
    """A test file of this suite (``test_x``, ``tests.unit.test_x``), not a library's module
    that happens to be named so (``aiohttp.test_utils``: its in-process test server)."""
    parts = mod.split(".")
    return parts[-1].startswith("test_") and (len(parts) == 1 or parts[0] == "tests")

"""The suite's tiers: every test file lives in ``tests/unit``, ``tests/process``,
``tests/chaos``, ``tests/browser`` or ``tests/bench``, and a ``tests/unit`` file starts no
process, so ``pytest tests/unit`` stays a quick run that needs no free ports, no Redis and no
cluster.

"Starts no process" is read from the source, not guessed from the name: a unit file imports
no module that runs programs (``subprocess``, ``multiprocessing``, ...), no helper of
``tests/support`` that does (directly or through another helper), calls no ``os.fork`` /
``os.exec*`` / ``os.spawn*`` / ``os.system`` / ``asyncio.create_subprocess_*``, and asks for
no ``conftest`` fixture built on such a helper (``cluster1``, ``redis_server``, ...).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
TIERS = ("unit", "process", "chaos", "browser", "bench")
# Standard modules whose import means the file can start programs.
PROCESS_MODULES = {"subprocess", "multiprocessing", "pty", "asyncio.subprocess", "pexpect"}
OS_STARTERS = ("fork", "forkpty", "system", "popen", "exec", "spawn", "posix_spawn")
ASYNCIO_STARTERS = ("create_subprocess_exec", "create_subprocess_shell")


def _imports(tree: ast.AST) -> Iterator[tuple[str, set[str]]]:
    """(module, names imported from it) for every import statement of ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, set()
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, {a.name for a in node.names}


def _starts_directly(tree: ast.AST) -> list[str]:
    """What in ``tree`` starts a process by itself: an import of a process module, or a call
    of an ``os`` / ``asyncio`` function that starts one."""
    found = [f"import {mod}" for mod, _ in _imports(tree)
             if mod in PROCESS_MODULES or mod.split(".")[0] in PROCESS_MODULES]  # fmt: skip
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner, attr = node.value.id, node.attr
            if (owner == "os" and attr.startswith(OS_STARTERS)) or (
                owner == "asyncio" and attr in ASYNCIO_STARTERS
            ):
                found.append(f"{owner}.{attr} (line {node.lineno})")
    return found


def _support_starters() -> set[str]:
    """``tests.support`` modules that start processes, directly or through another one."""
    trees = {p.stem: ast.parse(p.read_text()) for p in (TESTS / "support").glob("*.py")}
    starters = {name for name, tree in trees.items() if _starts_directly(tree)}
    grown = True
    while grown:  # through imports of other support modules, to a fixed point
        grown = False
        for name, tree in trees.items():
            uses = {m.removeprefix("tests.support.") for m, _ in _imports(tree)}
            uses |= {n for m, names in _imports(tree) if m == "tests.support" for n in names}
            if name not in starters and uses & starters:
                starters.add(name)
                grown = True
    return starters


def _process_fixtures(starters: set[str]) -> set[str]:
    """``conftest`` fixtures whose body uses a name imported from a process-starting helper."""
    tree = ast.parse((TESTS / "conftest.py").read_text())
    names = {n for mod, imported in _imports(tree)
             if mod.removeprefix("tests.support.") in starters for n in imported}  # fmt: skip
    fixtures = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any(
            "fixture" in ast.unparse(d) for d in node.decorator_list
        ):
            used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            if used & names:
                fixtures.add(node.name)
    return fixtures


def process_starts(source: str, starters: set[str], fixtures: set[str]) -> list[str]:
    """Why a test file with ``source`` may start a process (empty: it cannot)."""
    tree = ast.parse(source)
    found = _starts_directly(tree)
    for mod, names in _imports(tree):
        helper = mod.removeprefix("tests.support.")
        if mod.startswith("tests.support.") and helper in starters:
            found.append(f"import {mod}")
        elif mod == "tests.support" and names & starters:
            found.append(f"from tests.support import {sorted(names & starters)}")
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = {a.arg for a in node.args.args + node.args.kwonlyargs}
            found += [f"fixture {f} ({node.name})" for f in sorted(args & fixtures)]
    return found


def test_every_test_file_lives_in_one_tier() -> None:
    misplaced = [
        str(p.relative_to(TESTS))
        for p in TESTS.rglob("test_*.py")
        if p.parent.parent != TESTS or p.parent.name not in TIERS
    ]
    assert misplaced == [], f"outside the tiers {TIERS}: {misplaced}"
    assert all(any((TESTS / tier).glob("test_*.py")) for tier in TIERS)


def test_test_file_names_are_unique_across_tiers() -> None:
    """pytest imports a test file by its base name (the tier directories are not packages):
    two files of one name in two tiers would not both load."""
    names = [p.name for p in TESTS.rglob("test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


def test_unit_files_start_no_process() -> None:
    starters = _support_starters()
    fixtures = _process_fixtures(starters)
    offenders = {
        path.name: why
        for path in sorted((TESTS / "unit").glob("test_*.py"))
        if (why := process_starts(path.read_text(), starters, fixtures))
    }
    assert offenders == {}, f"move these to tests/process (or tests/chaos): {offenders}"


def test_the_check_sees_each_way_of_starting_a_process() -> None:
    """The rule above is not vacuous: the helpers that start clusters and Redis are found, the
    fixtures built on them too, and each way of starting a process is flagged."""
    starters = _support_starters()
    fixtures = _process_fixtures(starters)
    assert {"cluster", "redis"} <= starters and {"ports", "wait"}.isdisjoint(starters)
    assert {"cluster1", "cluster2", "redis_server"} <= fixtures
    flagged = [
        "import subprocess",
        "from multiprocessing import Process",
        "import os\nos.fork()",
        "import os\nos.execv('/bin/true', [])",
        "import asyncio\nasyncio.create_subprocess_exec('true')",
        "from tests.support.cluster import Cluster",
        "from tests.support import redis",
        "def test_x(cluster1):\n    pass",
    ]
    for source in flagged:
        assert process_starts(source, starters, fixtures), source
    harmless = "import os\nfrom tests.support.ports import free_port\ndef test_x(tmp_path): pass"
    assert process_starts(harmless, starters, fixtures) == []

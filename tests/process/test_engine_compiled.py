"""The mypyc-compiled engine gives byte-identical events to the interpreted one.

Builds the compiled engine (about half a minute of CPU) unless mypy/mypyc or a C compiler is
missing (then skipped, saying which), into pytest's cache directory: the build is named by the
hash of the engine's sources, so it is made once per source version, not once per run. Both
engines run in child processes (``SHARDEX_ENGINE=compiled`` / ``interpreted``) over the same
streams, made once here: the property tests' random streams and the workload generator's (all
mixes, garbage included), and each child prints msgpack of every event, every order status and
the final snapshot. ``shardex up`` with the build in the cache runs it (``shardex status``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import require

from shardex import compiled as builds
from shardex.engine import DEFAULT_MARKETS
from shardex.tools.workload import Workload
from tests.support.cluster import Cluster
from tests.support.engine_gen import (
    ACCOUNTS,
    IDS,
    SYMBOLS,
    _any_cmd,
    long_commands,
    stop_commands,
    timed_commands,
)

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import os, pickle, sys
import msgpack
import shardex.engine as pkg
from shardex.engine import DEFAULT_MARKETS, Engine
assert pkg.implementation() == os.environ["SHARDEX_ENGINE"], pkg.implementation()
streams = pickle.load(open(sys.argv[1], "rb"))
out = []
for window, cmds, probes in streams:
    eng = Engine(DEFAULT_MARKETS, recent=window)
    evs = eng.apply_many(cmds)
    src = lambda f, l: evs[f - 1 : l]
    st = [eng.order_status(s, a, i, src) for s, a, i in probes]
    eng.check_integrity()
    snap = eng.snapshot()
    again = Engine.restore(snap, DEFAULT_MARKETS, recent=window)
    out.append((evs, st, snap, again.snapshot(), eng.rejected))
sys.stdout.buffer.write(msgpack.packb(out, use_bin_type=True))
"""


def _streams() -> list:
    rng = random.Random(11)
    streams = []
    probes = [(s, a, i) for s in SYMBOLS for a in ACCOUNTS for i in IDS]
    for n in range(40):  # the property tests' generators, drawn reproducibly
        cmds = long_commands.example() if n % 2 else [_any_cmd.example() for _ in range(40)]
        streams.append((rng.choice((0, 1, 3, 100_000)), list(cmds), probes))
    for _ in range(10):  # gtd/day orders, exchange time, expiry sweeps, cancel-all, dead-man
        streams.append((rng.choice((0, 1, 3, 100_000)), list(timed_commands.example()), probes))
    for _ in range(10):  # with stop and take-profit orders (pending ones in the snapshots)
        streams.append((rng.choice((0, 3, 100_000)), list(stop_commands.example()), probes))
    for seed, mix in ((1, None), (2, {"limit": 30, "ioc": 30, "market": 10, "cancel": 20,
                                       "amend": 10})):  # fmt: skip
        kw = {"mix": mix} if mix else {}
        wl = Workload(symbols=("BTC-USD", "ETH-USD"), seed=seed, markets=DEFAULT_MARKETS, **kw)
        cmds = wl.warmup(300) + wl.take(20_000)
        ids = [c[2] for c in cmds[-2000:] if c[0] == 0][:300]
        p = [(c[1], c[3], c[2]) for c in cmds if c[0] == 0 and c[2] in set(ids)]
        streams.append((1000, cmds, p))
    return streams


def _run(mode: str, arg: Path | str, cache: Path, child: str = CHILD) -> bytes:
    env = {**os.environ, "SHARDEX_ENGINE": mode, "SHARDEX_ENGINE_CACHE": str(cache),
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", child, str(arg)], env=env, capture_output=True, timeout=300,
        cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def compiled_cache(request, tmp_path_factory) -> Path:
    require(
        importlib.util.find_spec("mypyc") is not None,
        "mypyc is not installed (pip install mypy): compiled engine not testable",
    )
    require(
        shutil.which(os.environ.get("CC", "gcc")) is not None or shutil.which("cc") is not None,
        "no C compiler: compiled engine not testable",
    )
    import sysconfig

    require(
        (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file(),
        "no Python headers (Python.h): compiled engine not testable",
    )
    # kept in .pytest_cache/d/shardex-engine (by source hash) when pytest's cache plugin is on;
    # with ``-p no:cacheprovider`` a fresh temporary directory (the build runs every time)
    store = getattr(request.config, "cache", None)
    cache = store.mkdir("shardex-engine") if store else tmp_path_factory.mktemp("engine")
    # the C compiled without optimisation (MYPYC_OPT_LEVEL=0): the same generated code, so the
    # same semantics to compare, for less than half the build's CPU (25 s -> 11 s measured)
    env = {**os.environ, "SHARDEX_ENGINE_CACHE": str(cache), "PYTHONPATH": str(ROOT),
           "MYPYC_OPT_LEVEL": "0"}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "shardex.engine.build"], env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return cache


@pytest.mark.timeout(900)  # (the build, when there is none yet for these sources)
def test_compiled_engine_gives_byte_identical_events_and_up_runs_it(
    compiled_cache, tmp_path, monkeypatch
):
    """One test for both uses of the build: two tests of a module fixture can land on two
    xdist workers, and each then built it again (~15 s of CPU)."""
    _byte_identical(compiled_cache, tmp_path)
    _up_runs_the_compiled_cores_and_says_so(compiled_cache, monkeypatch)


def _byte_identical(compiled_cache: Path, tmp_path: Path) -> None:
    data = tmp_path / "streams.pickle"
    data.write_bytes(pickle.dumps(_streams()))
    compiled = _run("compiled", data, compiled_cache)
    interpreted = _run("interpreted", data, compiled_cache)
    assert len(interpreted) > 100_000
    assert compiled == interpreted


def test_stale_or_missing_build_is_never_loaded(tmp_path):
    """A build is found only under the hash of the sources being imported."""
    env = {**os.environ, "SHARDEX_ENGINE_CACHE": str(tmp_path), "PYTHONPATH": str(ROOT)}
    code = "import shardex.engine as e; print(e.implementation())"
    auto = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert auto.stdout.strip() == "interpreted"
    env["SHARDEX_ENGINE"] = "compiled"
    forced = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert forced.returncode != 0 and "python -m shardex.engine.build" in forced.stderr


def _status(cluster: Cluster) -> dict:
    base = ["--base-port", str(cluster.layout.base_port), *cluster.key_args()]
    proc = subprocess.run([sys.executable, "-m", "shardex.cli", "status", "--json", *base],
                          capture_output=True, timeout=60, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return json.loads(proc.stdout)


def _up_status_and_output() -> tuple[dict, str]:
    """One engine shard and one account shard by ``shardex up`` (in this test's environment):
    what ``shardex status --json`` says of them, and what the cluster printed; stopped after."""
    cluster = Cluster(1, accounts=1)
    try:
        return _status(cluster), cluster.output()
    finally:
        cluster.stop()


def _up_runs_the_compiled_cores_and_says_so(compiled_cache: Path, monkeypatch: Any) -> None:
    """With a build of these sources in the cache, ``shardex up`` builds nothing and every
    engine and account shard runs it: ``shardex status`` and the shards' up lines say so
    (~4 s of CPU: one cluster)."""
    monkeypatch.setenv("SHARDEX_ENGINE_CACHE", str(compiled_cache))
    monkeypatch.delenv("SHARDEX_ENGINE_BUILD", raising=False)
    st, out = _up_status_and_output()
    assert [s["engine"] for s in st["shards"]] == ["compiled"]
    core = "compiled" if builds.PACKAGES["accounts"] else "interpreted"
    assert [a["core"] for a in st["accounts"]] == [core]
    assert "compiling the engine" not in out
    assert "compiled engine): router=" in out and f"{core} core): router=" in out


def test_up_falls_back_to_the_interpreted_cores_when_the_build_fails(tmp_path, monkeypatch):
    """A build that cannot be made (here: the cache is under a regular file) is one line, and
    the cluster starts on the interpreted cores (~4 s of CPU: one cluster, no compiler run)."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("SHARDEX_ENGINE_CACHE", str(blocker / "cache"))
    monkeypatch.delenv("SHARDEX_ENGINE_BUILD", raising=False)
    monkeypatch.delenv("SHARDEX_ENGINE", raising=False)
    st, out = _up_status_and_output()
    assert out.count("running the interpreted engine: the compiled build failed") == 1, out
    assert [s["engine"] for s in st["shards"]] == ["interpreted"]
    assert [a["core"] for a in st["accounts"]] == ["interpreted"]

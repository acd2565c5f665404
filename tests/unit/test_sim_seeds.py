"""The seed sweep of the test command: a few hundred short seeds of the simulated world
(``shardex.sim.worldrun``: 2 engine + 2 account shards, 2 clients, half a virtual second of
load then the heal) under every safe fault kind at once (``worldrun.SAFE``: delays, cuts,
partitions, crashes, power losses, pauses, slow turns), every invariant checked, continuous and
final. Split into ``CHUNKS`` test items so pytest-xdist spreads them over the cores. A failing
seed names its violations and the one command that replays it (``cli.replay_line``); the run
is the same run there (same seed, same code: same trace, same digest)."""

from __future__ import annotations

from collections import Counter

import pytest

from shardex.sim import worldrun
from shardex.sim.cli import replay_line
from tests.support.depth import DEPTH, count

CHUNKS = 6  # test items the seeds are spread over
# in all: 180 at the default depth (240 before 2026-12-07; SHARDEX_TEST_DEPTH scales it)
SEEDS = count(180, CHUNKS)
FIRST = 1000  # the first seed (apart from the seeds other sim tests run)
DURATION = 0.5  # virtual seconds of load per seed (about 3.5 with heal and the quiet)
FAULTS = list(worldrun.SAFE)
# the fault kinds a chunk must have injected (``Result.counts``): proof it ran under faults
KINDS = ("delayed", "cut", "partition", "crash", "power", "pause", "slow")


def chunk_seeds(chunk: int) -> range:
    """The seeds of test item ``chunk``."""
    per = SEEDS // CHUNKS
    return range(FIRST + chunk * per, FIRST + (chunk + 1) * per)


def test_the_chunks_cover_every_seed_once() -> None:
    seeds = [s for c in range(CHUNKS) for s in chunk_seeds(c)]
    assert seeds == list(range(FIRST, FIRST + SEEDS))


@pytest.mark.timeout(round(240 * max(1.0, DEPTH)))
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_every_seed_keeps_every_invariant_under_every_safe_fault(chunk: int) -> None:
    failures: list[str] = []
    injected: Counter[str] = Counter()
    checked = 0
    for seed in chunk_seeds(chunk):
        res = worldrun.run(seed, FAULTS, DURATION)
        injected.update(res.faults)
        checked += res.checked
        if res.violations:
            shown = "\n    ".join(map(str, res.violations[:5]))
            failures.append(f"seed {seed}: {len(res.violations)} violations\n    {shown}\n"
                            f"  replay: {replay_line(seed, FAULTS, DURATION, None)}")  # fmt: skip
    assert not failures, "\n".join(failures)
    assert checked > 100 * len(chunk_seeds(chunk))
    assert all(injected[k] for k in KINDS), injected

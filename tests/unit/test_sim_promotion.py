"""Crash points inside a promotion (``Faults.trap_promote_p``, ``shardex.sim.hazards``): a
standby that just took its lease dies before its epoch is recorded, with the record renamed
and not synced, or once it is durable and before the new leader answered anything. Seeded
replicated runs hit each point, every invariant holds, and ``--keep`` replays one.

CPU (2026-12-07): about 0.8 s per seed run (2 virtual seconds of load); seeds 1 and 2 per
point (seed 1 has no promotion while faults run), three runs of seed 2 for ``--keep``:
about 6 s in all."""

from __future__ import annotations

import pytest

from shardex.sim.faults import PROMOTION_POINTS
from shardex.sim.worldrun import run

pytestmark = pytest.mark.timeout(180)

# leaders (and standbys) of both tiers crashed and powered off often: many promotions, each
# with a crash point inside it
FAULTS = ["crash_per_s=2", "power_per_s=1", "down_s=0.05:0.3", "crashable=engine:accounts",
          "trap_promote_p=1"]  # fmt: skip
K = 4  # each point is hit within the first K seeds (seed 2, on 2026-12-07)


def _sprung(trace: list[tuple[float, str, str, str]]) -> list[tuple[str, str, str]]:
    """(replica, point, kill|power) of each promotion crash point that sprang: its
    ``promote_trap``, then (past its ``promote``, for the last point) ``trapped`` and the
    death of that replica at the same time."""
    out = []
    for i, (t, kind, node, detail) in enumerate(trace):
        if kind != "promote_trap":
            continue
        after = [e for e in trace[i + 1:] if e[0] == t and e[2] == node and e[1] != "promote"]
        if [e[1] for e in after[:2]] == ["trapped", "crash"]:
            point, how = detail.split()
            out.append((node, point, how))
    return out


@pytest.mark.parametrize("point", PROMOTION_POINTS)
def test_each_promotion_crash_point_is_hit_and_every_invariant_holds(point: str) -> None:
    """Aimed at one point (``trap_promote_at``), a seed of the first K dies there (a kill
    or a power loss, as drawn), and every invariant holds, in each seed run."""
    for seed in range(1, K + 1):
        res = run(seed, [*FAULTS, f"trap_promote_at={point}"], 2.0, replicas=True)
        assert res.violations == [], (seed, [str(v) for v in res.violations])
        sprung = _sprung(res.trace)
        if sprung:
            assert {p for _, p, _ in sprung} == {point}, sprung
            return
    raise AssertionError(f"no promotion died at {point} in seeds 1..{K}")


def test_a_promotion_crash_point_replays_with_keep() -> None:
    """The faults up to a promotion's crash (``keep``: their indexes) give the same crash
    point at the same virtual time; leaving the crash out, the replica lives on."""
    seed = 2
    full = run(seed, FAULTS, 2.0, replicas=True)
    (node, point, how), *_ = _sprung(full.trace)
    t = next(e[0] for e in full.trace if e[1] == "promote_trap" and e[2] == node)
    death = next(i for i, e in enumerate(full.schedule) if e[0] == t and e[2] == node)
    again = run(seed, FAULTS, 2.0, keep=list(range(death + 1)), replicas=True)
    assert (node, point, how) in _sprung(again.trace)
    assert again.violations == [], [str(v) for v in again.violations]
    spared = run(seed, FAULTS, 2.0, keep=list(range(death)), replicas=True)
    assert not [e for e in spared.schedule if e[0] == t and e[2] == node]

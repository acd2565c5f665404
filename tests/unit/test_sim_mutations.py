"""The mutation catalogue (``shardex.sim.mutations``): each known bug applies as a patch of the
production code and reverts exactly, also when the run inside fails; the patched code really
behaves as the bug did (checked on the pure cores where one shows it)."""

from __future__ import annotations

import pytest

from shardex.accounts.codes import A_DEPOSIT, A_NEW
from shardex.accounts.core import AccountCore
from shardex.client.fatesteps import FateDecisions
from shardex.client.results import EXECUTED
from shardex.engine import DEFAULT_MARKETS
from shardex.engine.codes import OP_NEW
from shardex.sim import mutations
from shardex.sim.mutations import MUTATIONS, Patch, applied


def _namespace(patches: list[Patch]) -> list[tuple[object, str, object]]:
    """What each patched name is in its owner's own namespace now (or absent)."""
    return [(p.owner, p.name, vars(p.owner).get(p.name, "<absent>")) for p in patches]


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_each_mutation_applies_and_reverts_exactly(name: str) -> None:
    m = MUTATIONS[name]
    before = _namespace(m.patches())
    with applied(name) as got:
        assert got is m
        during = _namespace(m.patches())
        assert all(now is not was for (_, _, now), (_, _, was) in zip(during, before, strict=True))
    assert _namespace(m.patches()) == before
    assert m.summary and m.needs and m.caught_by and m.fix


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_a_failing_run_still_reverts(name: str) -> None:
    before = _namespace(MUTATIONS[name].patches())
    with pytest.raises(ZeroDivisionError), applied(name):
        1 / 0  # noqa: B018 - the run inside blows up
    assert _namespace(MUTATIONS[name].patches()) == before


def test_unknown_mutation_and_none() -> None:
    with pytest.raises(KeyError, match="double_release"), applied("nope"):
        pass
    with applied(None) as m:
        assert m is None


def test_a_patch_cannot_stack() -> None:
    p = Patch(mutations, "_MISSING", 1)
    p.apply()
    try:
        with pytest.raises(RuntimeError):
            p.apply()
    finally:
        p.revert()
    assert mutations._MISSING != 1


def _core_with_an_open_order() -> tuple[AccountCore, list]:
    core = AccountCore(DEFAULT_MARKETS)
    out: list = []
    core.apply((A_DEPOSIT, "al", "USD", 10**12, "r1"), out)
    core.apply((A_NEW, "BTC-USD", "o1", "al", 0, 0, 100_00, 100, 0, False, 0, None), out)
    assert core.orders, out
    return core, out


def _cancel(core: AccountCore) -> None:
    (acct, symbol, oid), o = next(iter(core.orders.items()))
    core._close(acct, oid, o, core.table.pairs[symbol], [], oid)


def test_double_release_makes_money_appear_on_the_pure_core() -> None:
    core, _ = _core_with_an_open_order()
    _cancel(core)
    core.check_integrity()  # the real close: balanced
    core, _ = _core_with_an_open_order()
    with applied("double_release"):
        _cancel(core)
    with pytest.raises(Exception, match="USD"):
        core.check_integrity()


def test_queued_not_executed_ignores_the_account_shards_held() -> None:
    cmd = (OP_NEW, "BTC-USD", "o1", "al", 0, 0, 100, 1, 0, False, 0)
    held = {"state": "held", "seq": 3}
    assert FateDecisions.held_fate(cmd, None, held)[0] == EXECUTED
    with applied("queued_not_executed"):
        assert FateDecisions.held_fate(cmd, None, held) is None
    assert FateDecisions.held_fate(cmd, None, held)[0] == EXECUTED


# -- caught in the simulated world, under the command line's default faults ----------------------

# (mutation, expected check, seconds simulated per seed, K: the first seed failing is <= K,
# fault kinds beyond every safe one)
CAUGHT = [
    ("queued_not_executed", "ran_at_most_once", 2.0, 8, ()),
    ("link_identity_takeover", "acked_once", 1.0, 3, ()),
    ("double_release", "shard_money", 1.0, 3, ()),
    # a stale have needs a backlog at the top of a turn: turns that cost time (first: seed 2;
    # 12 of seeds 1-40 catch it, so K leaves room for the world's timing to move)
    ("late_sync", "reports_current", 3.0, 12, ("turn",)),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("name", "check", "duration", "k", "extra"), CAUGHT,
                         ids=[c[0] for c in CAUGHT])  # fmt: skip
def test_the_world_catches_the_mutation_with_every_safe_fault(name, check, duration, k,
                                                              extra) -> None:  # fmt: skip
    """Mutation on: a seed within the first K fails with the expected check (its replay line
    names it); the same seeds with the bug fixed pass every check."""
    from shardex.sim import worldrun  # noqa: PLC0415 - (the world imports the patched modules)
    from shardex.sim.cli import replay_line  # noqa: PLC0415

    faults = [*worldrun.SAFE, *extra]
    failed = None
    for seed in range(1, k + 1):
        res = worldrun.run(seed, faults, duration, name)
        if res.violations:
            failed = res
            break
    assert failed is not None, f"{name}: no seed of 1..{k} failed"
    assert check in {v.check for v in failed.violations}, (
        failed.violations, replay_line(failed.seed, faults, duration, name))
    for seed in range(1, failed.seed + 1):
        clean = worldrun.run(seed, faults, duration)
        assert clean.violations == [], (clean.violations, replay_line(seed, faults, duration, None))

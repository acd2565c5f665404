"""``python -m shardex.sim``: run seeds, print what broke with a one-line replay, shrink.

Per failing seed: its violations, the lead-up in its trace (``trace.lead_up``), and the one
command that replays it. ``--shrink`` reduces a failing seed's fault schedule with ``ddmin``
(``shrink.py``) and prints the replay of the minimal one (``--keep``: the indexes kept). At
the end a summary: seeds run and failed, faults injected by kind, invariant checks run per
second of CPU (``time.process_time``: the box may be shared), time simulated (every phase)
and per second of CPU. A seed fails on any violation: the invariants' and the world's own (a
node's turn raised, a node failed to start; check ``world``). Exit status 1
when any seed failed (a mutation run is expected to fail: that is the point).
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections import Counter
from collections.abc import Callable

import click

from shardex.sim.mutations import MUTATIONS
from shardex.sim.runner import Runner, RunResult
from shardex.sim.shrink import ddmin
from shardex.sim.trace import as_event, lead_up, render
from shardex.sim.worldrun import run as world_run

MAX_SHRINK_RUNS = 64


def replay_line(seed: int, faults: list[str], duration: float, mutation: str | None,
                keep: list[int] | None = None, flags: tuple[str, ...] = ()) -> str:  # fmt: skip
    """The one command that runs ``seed`` again as it ran."""
    parts = [f"PYTHONHASHSEED={os.environ.get('PYTHONHASHSEED', '0')}", "python -m shardex.sim",
             f"--seed {seed} --seeds 1", f"--faults {','.join(faults) or 'none'}",
             f"--duration {duration:g}"]  # fmt: skip
    if mutation:
        parts.append(f"--mutation {mutation}")
    parts.extend(flags)  # (the world's options: --bridge, --replicas, --store-faults ...)
    if keep is not None:
        parts.append(f"--keep {','.join(map(str, keep)) or 'none'}")
    return " ".join(parts)


def report(res: RunResult, faults: list[str], duration: float, mutation: str | None,
           keep: list[int] | None, echo: Callable[[str], None],
           flags: tuple[str, ...] = ()) -> None:  # fmt: skip
    """One failing seed, readable: violations, the lead-up, the replay command."""
    echo(f"seed {res.seed}: {len(res.violations)} violations (digest {res.digest})")
    for v in res.violations:
        echo(f"  VIOLATION {v}")
    first = str(res.violations[0]) if res.violations else ""
    shown = lead_up(res.trace, mentions=first)
    echo("  trace, the lead-up:")
    echo(render(shown, skipped=max(0, len(res.trace) - len(shown))))
    echo(f"  replay: {replay_line(res.seed, faults, duration, mutation, keep, flags)}")


def shrink(run: Runner, res: RunResult, faults: list[str], duration: float,
           mutation: str | None, echo: Callable[[str], None],
           flags: tuple[str, ...] = ()) -> list[int]:  # fmt: skip
    """``ddmin`` over ``res``'s fault schedule: the indexes of a minimal failing one."""
    checks = {v.check for v in res.violations}

    def fails(subset: list[int]) -> bool:
        again = run(res.seed, faults, duration, mutation, subset)
        return bool(checks & {v.check for v in again.violations})

    idx = list(range(len(res.schedule)))
    try:
        got = ddmin(idx, fails, max_runs=MAX_SHRINK_RUNS)
    except ValueError as exc:  # (a world that cannot replay a subset, or a flaky failure)
        echo(f"  cannot shrink: {exc}")
        return []
    echo(f"  shrunk: {len(res.schedule)} faults -> {len(got.items)} in {got.runs} runs"
         + (" (run budget spent: may not be minimal)" if got.exhausted else ""))  # fmt: skip
    for i in got.items:
        item = res.schedule[i]
        echo(f"    [{i}] {as_event(item).line() if isinstance(item, tuple) else item}")
    echo(f"  replay: {replay_line(res.seed, faults, duration, mutation, got.items, flags)}")
    return got.items


def _parse_list(text: str | None) -> list[str]:
    return [] if not text or text == "none" else [p.strip() for p in text.split(",") if p.strip()]


@click.command("sim")
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="How many seeds to run (SEED, SEED+1, ...).",
)
@click.option("--seed", type=int, default=1, show_default=True, help="The first seed.")
@click.option(
    "--faults",
    default="safe",
    show_default=True,
    help="Fault kinds to draw, comma-separated ('safe': every kind a correct cluster "
    "survives; 'none': a clean run; field=value: a Faults setting).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0.01),
    default=2.0,
    show_default=True,
    help="Seconds of (virtual) time per seed.",
)
@click.option(
    "--mutation",
    type=click.Choice(sorted(MUTATIONS)),
    default=None,
    help="Run with this known bug put back (shardex.sim.mutations).",
)
@click.option("--shrink", "do_shrink", is_flag=True, help="Shrink each failing seed's faults.")
@click.option(
    "--keep",
    default=None,
    help="Replay only these faults of the seed's schedule "
    "(indexes, comma-separated; 'none': no fault).",
)
@click.option("--stop-on-failure", is_flag=True, help="Stop at the first failing seed.")
@click.option("--bridge", is_flag=True,
              help="Run the bridge too, on a simulated store: its streams are checked.")
@click.option("--replicas", is_flag=True,
              help="Every shard with a hot standby (1 engine + 1 account shard, two replicas "
                   "each), their leases on the simulated store.")
@click.option("--store-faults", default=None, metavar="SETTINGS",
              help="The simulated Redis's faults (with --bridge or --replicas), e.g. "
                   "'down_per_s=1,cut_per_s=0.5,failover_per_s=0.5' (a failover loses the "
                   "writes its replica had not copied; with --replicas it breaks the lease's "
                   "one-Redis assumption).")
@click.option("--timed-orders", "timed", is_flag=True,
              help="The clients also place gtd orders (expiring by the journaled sweep) and "
                   "cancel-all an account's orders in a pair now and then.")
@click.option("--durability", type=click.Choice(["local", "replicated", "both"]),
              default="both", show_default=True,
              help="With --replicas: when the leaders reply (shardex up --durability).")
def main(seeds: int, seed: int, faults: str, duration: float, mutation: str | None,
         do_shrink: bool, keep: str | None, stop_on_failure: bool,
         bridge: bool, replicas: bool, store_faults: str | None,
         durability: str, timed: bool) -> None:  # fmt: skip
    """Run the simulated cluster for SEEDS seeds and check every invariant."""
    world: dict[str, object] = {}
    flags: list[str] = []
    if bridge:
        world["bridge"], flags = True, [*flags, "--bridge"]
    if replicas:
        world["replicas"], flags = True, [*flags, "--replicas"]
    if store_faults:
        if not (replicas or bridge):
            raise click.UsageError("--store-faults needs a store: --bridge or --replicas")
        world["store_faults"], flags = store_faults, [*flags, f"--store-faults {store_faults}"]
    if timed:
        world["timed"], flags = True, [*flags, "--timed-orders"]
    if durability != "both":
        if not replicas:
            raise click.UsageError("--durability needs --replicas")
        world["durability"], flags = durability, [*flags, f"--durability {durability}"]
    run: Runner = functools.partial(world_run, **world) if world else world_run  # type: ignore[arg-type]
    kinds = _parse_list(faults)
    kept = [int(k) for k in _parse_list(keep)] if keep is not None else None
    cpu0, failed = time.process_time(), []
    shrinking = 0.0  # (the CPU the shrinker's runs took: not the seeds' own)
    injected: Counter[str] = Counter()
    checked, simulated = 0, 0.0
    for s in range(seed, seed + seeds):
        try:
            res = run(s, kinds, duration, mutation, kept)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        injected.update(res.faults)
        checked += res.checked
        simulated += res.virtual_s
        if res.violations:
            failed.append(s)
            report(res, kinds, duration, mutation, kept, click.echo, tuple(flags))
            if do_shrink and res.schedule:
                t0 = time.process_time()
                shrink(run, res, kinds, duration, mutation, click.echo, tuple(flags))
                shrinking += time.process_time() - t0
            if stop_on_failure:
                break
        else:
            click.echo(f"seed {s}: ok ({res.checked} checks, digest {res.digest})")
    cpu = max(time.process_time() - cpu0 - shrinking, 1e-9)
    ran = (failed[-1] if stop_on_failure and failed else seed + seeds - 1) - seed + 1
    click.echo(f"summary: {ran} seeds, {len(failed)} failed"
               + (f" ({', '.join(map(str, failed))})" if failed else "")
               + f"; faults injected: {dict(sorted(injected.items())) or 'none'}"
               + f"; {checked} invariant checks in {cpu:.2f} s CPU ({checked / cpu:.0f}/s)"
               + f"; {simulated:.1f} s simulated ({simulated / cpu:.1f} per CPU s)")
    sys.exit(1 if failed else 0)

"""Perpetual futures in the engine, in process (like bench/engine.py): what perps cost.

1. **Commands/s, perps vs spot, the same stream shape**: one seeded workload (limit, ioc,
   market, cancel, amend; no stops: perp pairs refuse them) on a spot pair, and the very same
   commands renamed to a perp pair with the same grid, every account funded with ample
   margin and an index every ``--index-every`` commands (the feed's rounds); an ``OP_TIME``
   every 100 commands in both (a shard's batches). Fresh engines, the two alternated
   ``--rounds`` times in one run; CPU time (``time.thread_time``) of the command loop only.
2. **One price tick with N open positions** (``--positions 1000,10000,100000``): N accounts
   each hold 1 lot long against one maker, none near maintenance; an ``OP_INDEX`` moving one
   tick up or down is the new mark and the liquidation check (``engine.liqindex``: the rows
   changed since the last tick and the keys the mark crossed). CPU µs per tick (median over
   ``--ticks``) and ns per position; the first tick's µs apart (it builds the index from
   every position, as the first tick after a restore, a move or a funding payment does).
3. **Liquidation latency**: one of the N accounts is thin; an index that breaches it takes it
   over in the same journaled command (the IOC reduce-only order ``liq:<seq>`` enters matching
   inside that ``OP_INDEX``): commands from the breaching tick to the first liquidation order
   (0 is the design), and CPU µs of that one command.

Numbers are the box's: a 2-core VM shared with other work; read the ratios (same run) before
the absolute figures. ``--json`` prints one JSON object instead of the tables.

For instruction counts (steadier than time on a shared box), run part 2 alone under
cachegrind at two tick counts and take the difference over the extra ticks::

    PYTHONHASHSEED=0 valgrind --tool=cachegrind --cache-sim=no python bench/perps.py \\
        --only ticks --positions 1000 --ticks 20
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shardex.engine import DEFAULT_MARKETS, Engine, implementation  # noqa: E402
from shardex.engine.codes import (  # noqa: E402
    BUY,
    EV_LIQUIDATION,
    EV_REJECTED,
    EV_TRADE,
    GTC,
    IOC,
    LIMIT,
    OP_INDEX,
    OP_MARGIN,
    OP_NEW,
    OP_TIME,
    SELL,
    STP_NONE,
)
from shardex.engine.markets import Market, markets_from_table  # noqa: E402
from shardex.tools.workload import Workload  # noqa: E402

SPOT, PERP = "BTC-USD", "BTCPERP-USD"
MIX = {"limit": 45, "ioc": 10, "market": 5, "cancel": 35, "amend": 5}  # (the default, no stops)
T0 = 1_796_000_000_000  # exchange time of the first command (ms)
MARGIN = 10**15  # units of margin each account of part 1 gets: never the limit there


def markets() -> dict[str, Market]:
    """The spot pair and a perp pair with its very grid and bounds (20x, maintenance 3 %)."""
    spot = DEFAULT_MARKETS[SPOT]
    spec = {"kind": "perp", "tick": str(spot.tick), "lot": str(spot.lot),
            "max_price": str(spot.max_price), "max_qty": str(spot.max_qty),
            "initial_margin": "0.05", "maintenance_margin": "0.03"}  # fmt: skip
    return {SPOT: spot, **markets_from_table({PERP: spec})}


def _cpu_loop(engine: Engine, cmds: list) -> float:
    out: list = []
    apply = engine.apply
    gc.collect()
    gc.disable()
    t = time.thread_time()
    for c in cmds:
        apply(c, out)
    dt = time.thread_time() - t
    gc.enable()
    return dt


# -- 1. commands/s, perps vs spot ------------------------------------------------------------


def streams(mk: dict[str, Market], args: argparse.Namespace) -> dict:
    """The spot stream and its perp twin: (prelude, timed commands, orders in them)."""
    n, depth, index_every = args.commands, args.depth, args.index_every
    wl = Workload(symbols=[SPOT], seed=args.seed, markets=mk, mix=MIX, accounts=args.accounts)
    warm, cmds = wl.warmup(depth), wl.take(n)
    mid = wl.mid[SPOT]
    spot, perp, ts = [], [], T0
    for i, cmd in enumerate(cmds):
        if i % 100 == 0:
            ts += 1
            spot.append((OP_TIME, ts))
            perp.append((OP_TIME, ts))
        if index_every and i % index_every == 0:  # (a one-tick walk around the workload's mid)
            perp.append((OP_INDEX, PERP, mid + (i // index_every) % 3 - 1))
        spot.append(cmd)
        perp.append((cmd[0], PERP, *cmd[2:]))
    funded = [(OP_MARGIN, PERP, a, MARGIN) for a in wl.accounts]
    perp_warm = [(OP_TIME, T0), (OP_INDEX, PERP, mid), *funded,
                 *((c[0], PERP, *c[2:]) for c in warm)]  # fmt: skip
    return {"spot": ([(OP_TIME, T0), *warm], spot), "perp": (perp_warm, perp), "orders": n}


def throughput(mk: dict[str, Market], args: argparse.Namespace) -> dict[str, Any]:
    s = streams(mk, args)
    times: dict[str, list[float]] = {"spot": [], "perp": []}
    for r in range(args.rounds):
        for kind in ("spot", "perp") if r % 2 == 0 else ("perp", "spot"):
            warm, cmds = s[kind]
            engine = Engine(mk)
            engine.apply_many(warm)
            times[kind].append(_cpu_loop(engine, cmds))
    check = {}
    for kind in ("spot", "perp"):  # (one more, untimed: what the streams did)
        engine = Engine(mk)
        engine.apply_many(s[kind][0])
        evs = engine.apply_many(s[kind][1])
        check[kind] = (sum(e[0] == EV_TRADE for e in evs), sum(e[0] == EV_REJECTED for e in evs))
    n = s["orders"]
    ratios = [p / q for p, q in zip(times["perp"], times["spot"], strict=True)]
    return {
        "orders": n, "rounds": args.rounds, "index_every": args.index_every,
        "accounts": args.accounts, "depth": args.depth,
        "spot_cmds_per_s": round(n / statistics.median(times["spot"])),
        "perp_cmds_per_s": round(n / statistics.median(times["perp"])),
        "spot_us_per_cmd": round(statistics.median(times["spot"]) / n * 1e6, 2),
        "perp_us_per_cmd": round(statistics.median(times["perp"]) / n * 1e6, 2),
        "perp_over_spot_time": round(statistics.median(ratios), 3),
        "spot_trades_rejects": check["spot"], "perp_trades_rejects": check["perp"],
    }  # fmt: skip


# -- 2. and 3. a tick with N positions, and a liquidation -------------------------------------


def with_positions(mk: dict[str, Market], n: int, price: int) -> Engine:
    """N accounts 1 lot long at ``price`` (collateral a quarter of the notional: 4x), against
    one maker short N; ``thin`` also long 1 lot with 5.5 % margin (20x needs 5 %); bids 1..5 %
    below for a liquidation to sell into."""
    eng = Engine(mk)
    big = 10**15
    ask = (OP_NEW, PERP, "ask", "mm", SELL, LIMIT, price, n + 1, GTC, False, STP_NONE)
    cmds: list = [(OP_TIME, T0), (OP_INDEX, PERP, price), (OP_MARGIN, PERP, "mm", big),
                  (OP_MARGIN, PERP, "bids", big), ask]  # fmt: skip
    for i in range(n):
        cmds.append((OP_MARGIN, PERP, f"a{i}", price // 4))
        cmds.append((OP_NEW, PERP, f"b{i}", f"a{i}", BUY, LIMIT, price, 1, IOC, False, STP_NONE))
    cmds.append((OP_MARGIN, PERP, "thin", price * 55 // 1000))
    cmds.append((OP_NEW, PERP, "bt", "thin", BUY, LIMIT, price, 1, IOC, False, STP_NONE))
    for k in range(1, 6):
        cmds.append((OP_NEW, PERP, f"bid{k}", "bids", BUY, LIMIT, price * (100 - k) // 100, 10,
                     GTC, False, STP_NONE))  # fmt: skip
    evs = eng.apply_many(cmds)
    if any(e[0] == EV_REJECTED for e in evs):
        bad = next(e for e in evs if e[0] == EV_REJECTED)
        raise SystemExit(f"setting up {n} positions: refused {bad}")
    return eng


def tick_cost(mk: dict[str, Market], n: int, ticks: int, price: int) -> dict[str, Any]:
    eng = with_positions(mk, n, price)
    pos = eng.books[PERP].positions
    assert pos is not None and len(pos.accounts) == n + 3
    per: list[float] = []
    out: list = []
    gc.collect()
    gc.disable()
    for k in range(ticks):
        cmd = (OP_INDEX, PERP, price + (1 if k % 2 == 0 else 0))
        t = time.thread_time()
        eng.apply(cmd, out)
        per.append(time.thread_time() - t)
    gc.enable()
    if any(e[0] == EV_LIQUIDATION for e in out):
        raise SystemExit("a one-tick move liquidated: the positions are set up wrong")
    us = statistics.median(per[1:] or per) * 1e6
    return {"positions": n, "ticks": ticks, "us_per_tick": round(us, 1),
            "ns_per_position": round(us * 1000 / n, 1), "first_tick_us": round(per[0] * 1e6, 1),
            "liq": liquidation(eng, price)}  # fmt: skip


def liquidation(eng: Engine, price: int) -> dict[str, Any]:
    """The breaching tick (3 % down: only ``thin`` is below maintenance, 3 %): CPU µs of that one
    command, and how many commands after it the first liquidation order came (0: in it)."""
    out: list = []
    t = time.thread_time()
    eng.apply((OP_INDEX, PERP, price * 97 // 100), out)
    dt = time.thread_time() - t
    liqs = [e for e in out if e[0] == EV_LIQUIDATION]
    first = next((e for e in out if e[0] == EV_TRADE and str(e[5]).startswith("liq:")), None)
    return {"us": round(dt * 1e6, 1), "liquidations": len(liqs),
            "accounts": [e[3] for e in liqs],
            "commands_to_first_liquidation_order": 0 if first is not None else None}  # fmt: skip


# -- the report ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commands", type=int, default=100_000, help="orders in part 1's stream")
    p.add_argument("--depth", type=int, default=2_000, help="resting orders before it")
    p.add_argument("--rounds", type=int, default=5, help="spot/perp runs, alternated")
    p.add_argument("--accounts", type=int, default=100, help="the workload's accounts")
    p.add_argument("--index-every", type=int, default=1_000, help="an index every K orders")
    p.add_argument("--positions", default="1000,10000,100000", help="N of part 2 (a list)")
    p.add_argument("--ticks", type=int, default=0, help="ticks per N (0: 2,000,000 / N, 5..200)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--only", choices=("throughput", "ticks"), default=None)
    p.add_argument("--json", action="store_true", help="one JSON object, no tables")
    args = p.parse_args(argv)
    mk = markets()
    price = mk[PERP].max_price_ticks // 200  # (the workload's mid: BTC-USD at 50,000)
    report: dict[str, Any] = {"engine": implementation(), "python": sys.version.split()[0]}
    if args.only != "ticks":
        report["throughput"] = throughput(mk, args)
    if args.only != "throughput":
        sizes = [int(x) for x in args.positions.split(",") if x]
        report["ticks"] = [tick_cost(mk, n, args.ticks or max(5, min(200, 2_000_000 // n)),
                                     price) for n in sizes]  # fmt: skip
    if args.json:
        print(json.dumps(report))
    else:
        print_tables(report)
    return report


def print_tables(report: dict[str, Any]) -> None:
    print(f"engine {report['engine']}, Python {report['python']}")
    t = report.get("throughput")
    if t:
        print(f"\n1. {t['orders']:,} orders of {t['accounts']:,} accounts over {t['depth']:,} "
              f"resting, median of {t['rounds']} runs each (CPU time), perp: an index every "
              f"{t['index_every']:,} orders")  # fmt: skip
        print(f"   spot {t['spot_cmds_per_s']:>9,} cmd/s  {t['spot_us_per_cmd']:>6} µs/cmd  "
              f"trades/rejects {t['spot_trades_rejects']}")  # fmt: skip
        print(f"   perp {t['perp_cmds_per_s']:>9,} cmd/s  {t['perp_us_per_cmd']:>6} µs/cmd  "
              f"trades/rejects {t['perp_trades_rejects']}")  # fmt: skip
        print(f"   perp / spot time (median of the rounds' ratios): {t['perp_over_spot_time']}")
    if report.get("ticks"):
        print("\n2-3. positions  µs/tick  ns/position  first tick µs  liquidating tick µs  "
              "liquidations  commands to the first liquidation order")  # fmt: skip
        for r in report["ticks"]:
            liq = r["liq"]
            print(f"     {r['positions']:>9,}  {r['us_per_tick']:>7}  {r['ns_per_position']:>11}  "
                  f"{r['first_tick_us']:>13}  "
                  f"{liq['us']:>19}  {liq['liquidations']:>12}  "
                  f"{liq['commands_to_first_liquidation_order']}")  # fmt: skip


if __name__ == "__main__":
    main()

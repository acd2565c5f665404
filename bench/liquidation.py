"""CPU of one perp index that takes many positions over, in the engine alone (no process).

``python bench/liquidation.py [--longs 1000,4000] [--adl-share 0.5] [--repeat 3]`` opens
N longs of 10 lots against one market maker, rests the market maker's bids for all but
``--adl-share`` of them, and times (``time.process_time``, the best of ``--repeat``) the one
index command that crashes the price below every long's bankruptcy price: each long is taken
over, the book fills the first ones and the rest are auto-deleveraged against the market
maker (``shardex.engine.liquidation``, ``shardex.engine.adl``). Prints per N: CPU ms of
that command, µs per take-over, and the events it made. Set ``SHARDEX_ENGINE`` to
``interpreted`` or ``compiled`` to choose the build (docs/performance.md).
"""

from __future__ import annotations

import argparse
import time

from shardex.engine.codes import (
    BUY,
    EV_ADL,
    EV_LIQUIDATION,
    GTC,
    LIMIT,
    OP_INDEX,
    OP_MARGIN,
    OP_NEW,
    OP_TIME,
    SELL,
    STP_NONE,
)
from shardex.engine.engine import Engine
from shardex.engine.markets import DEFAULT_MARKETS, markets_from_table

PERP = "BTCPERP-USD"
SPEC = {"kind": "perp", "tick": "0.1", "lot": "0.001", "initial_margin": "0.1",
        "maintenance_margin": "0.05"}  # fmt: skip
OPEN, BID, CRASH = 300_000, 269_000, 250_000  # ticks; every long's bankruptcy: 260,000


def _order(oid: str, account: str, side: int, price: int, qty: int) -> tuple:
    return (OP_NEW, PERP, oid, account, side, LIMIT, price, qty, GTC, False, STP_NONE)


def opened(longs: int, adl_share: float) -> tuple[Engine, dict]:
    """An engine with ``longs`` longs of 10 lots (40 USD of margin each: 7.5x) and the
    market maker's bid for the share of them the book takes."""
    markets = {**DEFAULT_MARKETS, **markets_from_table({PERP: SPEC})}
    eng = Engine(markets)
    cmds = [(OP_TIME, 1_000), (OP_INDEX, PERP, OPEN), (OP_MARGIN, PERP, "mm", 10**14),
            *((OP_MARGIN, PERP, f"l{n}", 400_000) for n in range(longs)),
            _order("ask", "mm", SELL, OPEN, 10 * longs),
            *(_order(f"b{n}", f"l{n}", BUY, OPEN, 10) for n in range(longs))]  # fmt: skip
    booked = longs - int(longs * adl_share)
    if booked:
        cmds.append(_order("bid", "mm", BUY, BID, 10 * booked))
    eng.apply_many(cmds)
    return eng, markets


def measure(longs: int, adl_share: float, repeat: int) -> tuple[float, int, int, int]:
    """(best CPU seconds, events, take-overs, ADL events) of the crash index."""
    best, events = float("inf"), []
    for _ in range(repeat):
        eng, _ = opened(longs, adl_share)
        t0 = time.process_time()
        events = eng.apply_many([(OP_TIME, 2_000), (OP_INDEX, PERP, CRASH)])
        best = min(best, time.process_time() - t0)
    taken = sum(1 for ev in events if ev[0] == EV_LIQUIDATION)
    adl = sum(1 for ev in events if ev[0] == EV_ADL)
    return best, len(events), taken, adl


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--longs", default="1000,4000", help="comma-separated counts of longs")
    ap.add_argument("--adl-share", type=float, default=0.5,
                    help="share of the longs the book cannot take (deleveraged)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    for longs in (int(x) for x in args.longs.split(",")):
        cpu, events, taken, adl = measure(longs, args.adl_share, args.repeat)
        print(f"longs {longs}: take-overs {taken}, adl {adl}, events {events}, "
              f"cpu {cpu * 1e3:.1f} ms, {cpu / max(taken, 1) * 1e6:.1f} us per take-over")


if __name__ == "__main__":
    main()

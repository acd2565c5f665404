"""The account core's per-order cost and its reads by account, in one process (no sockets).

``python bench/accountreads.py [--resting N] [--orders K] [--json]`` builds one ``AccountCore``
with 100 funded accounts and N resting buys spread over them, then measures:

- ``per_order_us``: a new order held and its cancel settled (the index kept where an order
  opens and ends), K times, CPU per pair;
- ``audit_ms``: a whole audit read page by page (``held_rows``, offsets as ``shardex audit``
  sends them), best of 5;
- ``orders_read_ms``: one account's orders read (``account_orders``), mean of 20 accounts.

The cyclic GC is off during the measurement, as in the nodes (``runtime.tune_gc``). Run it in
two trees (``PYTHONPATH=TREE python bench/accountreads.py``) back to back, or under
``valgrind --tool=cachegrind`` with ``PYTHONHASHSEED=0`` for instruction counts (the difference
between two ``--orders`` is the per-order count). Trees whose ``held_rows`` /
``account_orders`` take the flat ``orders`` mapping (before the per-account index) are
measured too, with that mapping.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import time
from typing import Any

from shardex.accounts import AccountCore
from shardex.accounts.codes import A_DEPOSIT, A_NEW, S_CANCELLED
from shardex.accounts.orders import account_orders, held_rows
from shardex.config import load_markets
from shardex.engine.codes import BUY, GTC, LIMIT

ACCOUNTS = 100
SYMBOL = "BTC-USD"


def _new(k: int) -> tuple:
    return (A_NEW, SYMBOL, f"o{k}", f"acct-{k % ACCOUNTS}", BUY, LIMIT, 2_000_000 + k % 50, 1,
            GTC, False, 0, None)  # fmt: skip


def build(resting: int) -> AccountCore:
    """The core: every account funded, ``resting`` buys open."""
    core = AccountCore(load_markets(None), 0, 1)
    out: list[tuple] = []
    for a in range(ACCOUNTS):
        core.apply((A_DEPOSIT, f"acct-{a}", "USD", 10**15, f"d{a}"), out)
    for k in range(resting):
        core.apply(_new(k), out)
        if len(out) > 10_000:
            out.clear()
    return core


def per_order(core: AccountCore, resting: int, orders: int) -> float:
    """CPU µs per new order and its cancel settlement."""
    cancels = [(S_CANCELLED, 0, k + 1, k, SYMBOL, f"acct-{k % ACCOUNTS}", f"o{resting + k}",
                "user", 1) for k in range(orders)]  # fmt: skip
    news = [_new(resting + k) for k in range(orders)]
    out: list[tuple] = []
    t = time.process_time()
    for k in range(orders):
        core.apply(news[k], out)
        core.apply(cancels[k], out)
        if len(out) > 10_000:
            out.clear()
    spent = time.process_time() - t
    if core.anomalies:
        raise SystemExit(f"{core.anomalies} settlement anomalies: the stream does not fit")
    return spent * 1e6 / max(1, orders)


def reads(core: AccountCore) -> dict[str, float]:
    """A whole audit page by page (best of 5) and one account's orders read (mean of 20)."""
    indexed = "orders" not in inspect.signature(held_rows).parameters
    src: Any = core.open_by if indexed else core.orders
    total = len(core.orders)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        offset = 0
        while offset < total:
            got = held_rows(src, offset)
            if not got:
                break
            offset += len(got)
        best = min(best, time.perf_counter() - t)
    t = time.perf_counter()
    for a in range(20):
        account_orders(src, f"acct-{a}", core.table)
    return {"audit_ms": best * 1e3, "orders_read_ms": (time.perf_counter() - t) / 20 * 1e3}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--resting", type=int, default=20_000, help="orders open while measured")
    p.add_argument("--orders", type=int, default=50_000, help="new + cancel pairs timed")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    core = build(args.resting)
    gc.collect()
    gc.freeze()
    gc.disable()
    res = {"resting": args.resting, **reads(core)}
    res["per_order_us"] = per_order(core, args.resting, args.orders)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{args.resting:,} resting: whole audit {res['audit_ms']:.1f} ms, one account's "
              f"orders {res['orders_read_ms']:.2f} ms, new + cancel {res['per_order_us']:.2f} "
              "µs CPU")  # fmt: skip


if __name__ == "__main__":
    main()

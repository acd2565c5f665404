"""History write throughput (rows/s) into SQLite and PostgreSQL.

A market story of ``--rounds`` rounds (two accounts, two orders, a trade, a cancel and four
balance changes each: 2 order rows, 2 fill rows, 3 order-event rows, 4 balance rows per
round), formatted by the bridge's own ``EntryFormatter``, then two measurements per database:

* ``writer``: the entries XADDed to a real Redis (the embedded server, ``--redis-port``), then
  the history writer (``HistoryWriter``, ``--batch`` entries per read and per transaction)
  drains every stream into a fresh database: rows written per second of wall time;
* ``db``: the same rows straight into ``Store.apply``, ``--batch`` rows per transaction: the
  database's own rate, without Redis reads or row building.

SQLite is a file in a temp dir (WAL, synchronous=NORMAL); PostgreSQL is ``--pg-url`` or, by
default, a private throwaway server of Debian's package (``tests/support/postgres.py``).
Prints a table; ``--json`` one object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shardex.accounts.assets import AssetTable  # noqa: E402
from shardex.accounts.codes import AE_BALANCE, AE_FORWARD  # noqa: E402
from shardex.config import load_markets  # noqa: E402
from shardex.engine.codes import (  # noqa: E402
    BUY,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_TRADE,
    GTC,
    LIMIT,
    OP_NEW,
    SELL,
    STP_NONE,
)
from shardex.history.store import Store  # noqa: E402
from shardex.history.writer import HistoryWriter, WriterConfig  # noqa: E402
from shardex.kinds.redis import redis_binary  # noqa: E402
from shardex.node.bridge.entries import EntryFormatter  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402

MARKETS = load_markets()


def story(rounds: int) -> dict[str, list[tuple[str, list[str]]]]:
    """Stream key → [(id, flat fields)], as the bridge writes them (1 account, 1 engine shard)."""
    fmt = EntryFormatter(MARKETS, AssetTable(MARKETS))
    out: dict[str, list] = {"shardex:orders:0": [], "shardex:balances:0": [],
                            "shardex:events:0": []}  # fmt: skip
    aseq = eseq = 0
    for k in range(rounds):
        a, b = f"acct-{k % 97}", f"acct-{(k + 1) % 97}"
        for acct, oid, side in ((a, f"s{k}", SELL), (b, f"b{k}", BUY)):
            aseq += 1
            out["shardex:balances:0"].append(
                fmt.balance_item((AE_BALANCE, aseq, acct, "USD", 10**9, k, "hold", oid), 0)
            )
            aseq += 1
            cmd = (OP_NEW, "BTC-USD", oid, acct, side, LIMIT, 10_000, 100, GTC, False, STP_NONE)
            item = fmt.order_item((AE_FORWARD, aseq, 0, 0, cmd), 0)
            assert item is not None
            out["shardex:orders:0"].append(item)
        for ev in ((EV_ACCEPTED, f"s{k}"), (EV_ACCEPTED, f"b{k}"),
                   (EV_TRADE, 10_000, 40, f"b{k}", f"s{k}", BUY, k + 1),
                   (EV_CANCELLED, f"s{k}", "user", 60)):  # fmt: skip
            eseq += 1
            item = fmt.item((ev[0], eseq, "BTC-USD", *ev[1:]), 0)
            out["shardex:events:0"].append(item[:2])
        for acct, ref in ((a, f"t{k + 1}"), (b, f"t{k + 1}")):
            aseq += 1
            out["shardex:balances:0"].append(
                fmt.balance_item((AE_BALANCE, aseq, acct, "BTC", 10**6, 0, "trade", ref), 0)
            )
    return out


def _load(r: Any, streams: dict[str, list[tuple[str, list[str]]]]) -> None:
    for key, entries in streams.items():
        pipe = r.pipeline(transaction=False)
        for n, (eid, flat) in enumerate(entries, 1):
            pipe.xadd(key, dict(zip(flat[::2], flat[1::2], strict=True)), id=eid)
            if n % 5000 == 0:
                pipe.execute()
        pipe.execute()


def _rows_of(store: Store) -> int:
    return sum(store.query(f"SELECT COUNT(*) FROM {t}")[0][0]
               for t in ("hx_orders", "hx_order_events", "hx_fills", "hx_balances"))  # fmt: skip


def bench_writer(url: str, r: Any, batch: int) -> dict[str, float]:
    with Store(url) as store:
        w = HistoryWriter(WriterConfig(shards=1, accounts=1, batch=batch), r, store)
        t0 = time.perf_counter()
        while w.step():
            pass
        dt = time.perf_counter() - t0
        rows = _rows_of(store)
    return {"rows": rows, "seconds": round(dt, 3), "rows_per_s": round(rows / dt)}


def bench_db(url: str, source_url: str, batch: int) -> dict[str, float]:
    """The rows the writer made (read back from ``source_url``) into a fresh ``url``."""
    tables = ("hx_orders", "hx_order_events", "hx_fills", "hx_balances")
    with Store(source_url) as src:
        rows = {t: [r[1:] for r in src.query(f"SELECT * FROM {t} ORDER BY hid")] for t in tables}
    total = sum(len(v) for v in rows.values())
    with Store(url) as store:
        t0 = time.perf_counter()
        for t, batch_rows in rows.items():
            for i in range(0, len(batch_rows), batch):
                store.apply({t: batch_rows[i : i + batch]}, {f"bench:{t}": i})
        dt = time.perf_counter() - t0
    return {"rows": total, "seconds": round(dt, 3), "rows_per_s": round(total / dt)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--redis-port", type=int, default=63450)
    ap.add_argument("--pg-url", help="a PostgreSQL database to use (default: a private server)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="shardex-bench-history-")
    server = subprocess.Popen([redis_binary(), "--port", str(args.redis_port), "--save", "",
                               "--appendonly", "no", "--dir", tmp],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    pg = None if args.pg_url else PostgresServer()
    try:
        r = redis.Redis(port=args.redis_port, decode_responses=True)
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        _load(r, story(args.rounds))
        urls = {"sqlite": f"sqlite:///{tmp}/w.sqlite",
                "postgresql": args.pg_url or pg.new_database()}  # fmt: skip
        dbs = {"sqlite": f"sqlite:///{tmp}/d.sqlite",
               "postgresql": args.pg_url if args.pg_url else pg.new_database()}  # fmt: skip
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        out: dict[str, Any] = {"rounds": args.rounds, "batch": args.batch, "when": when}
        for name, url in urls.items():
            out[f"{name}_writer"] = bench_writer(url, r, args.batch)
            if name == "sqlite" or not args.pg_url:
                out[f"{name}_db"] = bench_db(dbs[name], url, args.batch)
    finally:
        server.terminate()
        server.wait(10)
        if pg is not None:
            pg.stop()
    if args.json:
        print(json.dumps(out))
        return
    print(f"history write throughput, {args.rounds} rounds, batch {args.batch} ({out['when']})")
    for key, v in out.items():
        if isinstance(v, dict):
            print(f"  {key:<18} {v['rows']:>9,} rows  {v['seconds']:>8.2f} s  "
                  f"{v['rows_per_s']:>9,} rows/s")  # fmt: skip


if __name__ == "__main__":
    main()

"""``shardex history --check``: the history database agrees with the cluster's journals.

Every journal of the data directory (``shard-I``, ``accounts-J``; a replica's ``.rN`` copy is
the same journal) is replayed by the machine its shard recovers with
(``tools.replay.replay_journal``), and its events are turned into the rows the writer would
have written from the streams, by the same functions (``rows``; a forward's fields by
``order_fields``, as the bridge formats them). The database must hold exactly those rows:
none missing, none extra, none different (``ts`` aside: a journal replay has no wall clock to
compare it with). Rows whose origin lies before a journal's oldest replayable event (older
segments dropped after a snapshot) cannot be checked and are left out, and so are orders the
journals no longer hold, when a fill needs one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shardex.engine import Market
from shardex.history.rows import balance_row, engine_rows, new_rows, order_row
from shardex.history.schema import BY_NAME, ORDERS, TABLES
from shardex.history.store import Store
from shardex.node.bridge.entries import order_fields
from shardex.tools.replay import replay_journal

_JOURNAL = re.compile(r"^(shard|accounts)-(\d+)$")
SHOWN = 5  # differences listed per table and kind


@dataclass
class CheckReport:
    """What ``check`` found: rows compared per table, and each difference as one line."""

    compared: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _strings(obj: Mapping[str, Any]) -> dict[str, str]:
    """A replayed event's JSON object as a stream entry's fields (every value a string)."""
    return {k: v if isinstance(v, str) else str(v) for k, v in obj.items()}


def _replayed(directory: Path, markets: Mapping[str, Market]) -> list[dict]:
    out: list[str] = []
    replay_journal(directory, markets, out.append)
    return [json.loads(line) for line in "".join(out).splitlines() if line]


def expected(data_dir: Path, markets: Mapping[str, Market]) -> tuple[dict, dict]:
    """(table → rows the journals imply, (role, shard) → the first seq replayed)."""
    rows = new_rows()
    first: dict[tuple[str, int], int] = {}
    dirs = sorted((m.group(1), int(m.group(2)), p) for p in data_dir.iterdir()
                  if (m := _JOURNAL.match(p.name)) and p.is_dir())  # fmt: skip
    for role, j, d in dirs:
        if role != "accounts":
            continue
        for obj in _replayed(d, markets):
            first.setdefault(("a", j), int(obj["seq"]))
            if obj["ev"] == "forward" and isinstance(obj.get("command"), dict):
                f = order_fields(obj["command"], obj["shard"], obj["seq"])
                if f is not None:
                    rows[ORDERS.name].append(order_row(j, _strings(f)))
            elif obj["ev"] == "balance":
                rows["hx_balances"].append(balance_row(j, _strings(obj)))
    accounts = {(r[1], r[2]): r[0] for r in rows[ORDERS.name]}
    for role, i, d in dirs:
        if role != "shard":
            continue
        for obj in _replayed(d, markets):
            first.setdefault(("e", i), int(obj["seq"]))
            got = engine_rows(i, _strings(obj), lambda s, o: accounts.get((s, o)))
            for table, row in got or []:  # (None: an order older than the journals)
                rows[table].append(row)
    return rows, first


def _origin(table: str, row: tuple) -> tuple:
    t = BY_NAME[table]
    return tuple(row[t.names.index(c)] for c in t.unique)


def _checkable(table: str, row: tuple, first: Mapping[tuple[str, int], int]) -> bool:
    """Whether ``row``'s origin lies within what the journals still replay."""
    names = BY_NAME[table].names
    if "eshard" in names and "eseq" in names:
        return row[names.index("eseq")] >= first.get(("e", row[names.index("eshard")]), 1)
    return row[names.index("aseq")] >= first.get(("a", row[names.index("ashard")]), 1)


def check(store: Store, data_dir: str | Path, markets: Mapping[str, Market]) -> CheckReport:
    """Compare the database behind ``store`` with the journals of ``data_dir``."""
    want, first = expected(Path(data_dir), markets)
    report = CheckReport()
    for t in TABLES:
        cols = [c for c in t.names if c != "ts"]
        have_rows = store.query(f"SELECT {', '.join(cols)} FROM {t.name}")
        have = {_origin(t.name, r): r for r in have_rows if _checkable(t.name, r, first)}
        wanted = {_origin(t.name, r): tuple(r[:-1]) for r in want[t.name]}  # (ts is last)
        report.compared[t.name] = len(wanted)
        missing = [k for k in wanted if k not in have]
        extra = [k for k in have if k not in wanted]
        differ = [k for k in wanted if k in have and have[k] != wanted[k]]
        for what, keys in (("missing", missing), ("extra", extra), ("different", differ)):
            if keys:
                shown = ", ".join(f"{dict(zip(t.unique, k, strict=True))}" for k in keys[:SHOWN])
                report.problems.append(f"{t.name}: {len(keys)} {what} row(s): {shown}")
    return report

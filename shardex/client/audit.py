"""``audit_report``: the conservation check over every account shard's books (pure: the
``audit`` call of either client fetches them, ``shardex audit`` and the tests print this)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any


def audit_report(shards: list[dict[str, Any]]) -> tuple[list[str], bool]:
    """Conservation over every account shard (lines to print, ok): per asset, Σ(available +
    held) + fees == deposits - withdrawals, the shards' trade inflows sum to 0, the fee ledger
    (fees collected on every fill minus the maker rebates paid) is not negative — the venue
    never pays out more than it takes — and each shard passes its own integrity check. A shard
    that did not answer fails the audit."""
    ok = True
    lines: list[str] = []
    sums: dict[str, dict[str, int]] = {}
    units: dict[str, Decimal] = {}
    for sh in shards:
        j = sh.get("shard")
        if "error" in sh:
            lines.append(f"account shard {j}: ERROR {sh['error']}")
            ok = False
            continue
        if sh.get("integrity") != "ok":
            lines.append(f"account shard {j}: INTEGRITY {sh.get('integrity')}")
            ok = False
        for a, u in (sh.get("units") or {}).items():
            units[a] = Decimal(u)
        for name in ("balances", "fees", "deposited", "withdrawn", "flow", "rebates"):
            for a, v in (sh.get(name) or {}).items():
                sums.setdefault(a, {}).setdefault(name, 0)
                sums[a][name] += int(v)
        if sh.get("anomalies"):
            # a settlement that did not fit (an order traded twice, a fill of an order the
            # shard never held): money may have moved where it should not, so the audit fails
            lines.append(f"account shard {j}: {sh['anomalies']} settlement anomalies VIOLATION")
            ok = False
    for a in sorted(sums):
        t = sums[a]
        have = t.get("balances", 0) + t.get("fees", 0)
        owed = t.get("deposited", 0) - t.get("withdrawn", 0)
        unit = units.get(a, Decimal(1))
        fees, rebates = t.get("fees", 0), t.get("rebates", 0)
        good = have == owed and t.get("flow", 0) == 0 and fees >= 0
        ok = ok and good

        def amt(units: int, unit: Decimal = unit) -> str:
            return format(units * unit, "f")  # (never 0E-8)

        lines.append(
            f"{a:<6} balances+fees {amt(have)}  deposits-withdrawals {amt(owed)}  "
            f"fees {amt(fees)}  trade inflow {amt(t.get('flow', 0))}  "
            + (f"(collected {amt(fees + rebates)}, rebates {amt(rebates)})  " if rebates else "")
            + f"{'ok' if good else 'VIOLATION'}"
            + ("" if have == owed else f" (difference {amt(have - owed)}: money "
               f"{'appeared' if have > owed else 'disappeared'})")
            + ("" if fees >= 0 else " (rebates paid exceed the fees collected)")  # fmt: skip
        )
    lines.append(f"audit: {'ok' if ok else 'FAILED'} ({len(shards)} account shards)")
    return lines, ok

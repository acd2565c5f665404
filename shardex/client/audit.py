"""``audit_report``: the conservation check over every account shard's books (pure: the
``audit`` call of either client fetches them, ``shardex audit`` and the tests print this)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from shardex.engine.positions import pair_violations


def audit_report(shards: list[dict[str, Any]]) -> tuple[list[str], bool]:
    """Conservation over every account shard (lines to print, ok): per asset, Σ(available +
    held) + fees == deposits - withdrawals, the shards' trade inflows sum to 0, the fee ledger
    (fees collected on every fill minus the maker rebates paid) is not negative — the venue
    never pays out more than it takes — and each shard passes its own integrity check. A shard
    that did not answer fails the audit. Margin moved into perp pairs counts with the
    balances; the engine shards' entries (``{"engine": i, ...}``) are checked per perp pair
    (``perp_report``)."""
    engines = [sh for sh in shards if "engine" in sh]
    shards = [sh for sh in shards if "engine" not in sh]
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
        for name in ("balances", "fees", "deposited", "withdrawn", "flow", "rebates", "margin"):
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
        have = t.get("balances", 0) + t.get("fees", 0) + t.get("margin", 0)
        owed = t.get("deposited", 0) - t.get("withdrawn", 0)
        unit = units.get(a, Decimal(1))
        fees, rebates = t.get("fees", 0), t.get("rebates", 0)
        good = have == owed and t.get("flow", 0) == 0 and fees >= 0
        ok = ok and good

        def amt(units: int, unit: Decimal = unit) -> str:
            return format(units * unit, "f")  # (never 0E-8)

        lines.append(
            f"{a:<6} balances+fees{'+margin' if t.get('margin') else ''} {amt(have)}  "
            f"deposits-withdrawals {amt(owed)}  "
            f"fees {amt(fees)}  trade inflow {amt(t.get('flow', 0))}  "
            + (f"(collected {amt(fees + rebates)}, rebates {amt(rebates)})  " if rebates else "")
            + f"{'ok' if good else 'VIOLATION'}"
            + ("" if have == owed else f" (difference {amt(have - owed)}: money "
               f"{'appeared' if have > owed else 'disappeared'})")
            + ("" if fees >= 0 else " (rebates paid exceed the fees collected)")  # fmt: skip
        )
    perp_lines, perp_ok = perp_report(shards, engines) if engines else ([], True)
    lines, ok = lines + perp_lines, ok and perp_ok
    lines.append(f"audit: {'ok' if ok else 'FAILED'} ({len(shards)} account shards)")
    return lines, ok


def perp_report(shards: list[dict[str, Any]], engines: list[dict[str, Any]]
                ) -> tuple[list[str], bool]:  # fmt: skip
    """Per perp pair, from the engine shards' totals (``node.positions_read.pair_totals``,
    units of tick × lot) and the account shards' ``margin_pairs``: the pair's own zero sums
    (size, fill cash flow ``pnl``, funding + remainder) and Σ collateral + funding + fund ==
    Σ margin moved in − out as the account shards confirmed it. With moves still in flight
    the last is not compared (said so: run it again on a quiet pair)."""
    ok = True
    lines: list[str] = []
    moved: dict[str, list[int]] = {}
    for sh in shards:
        for symbol, (net, flying) in (sh.get("margin_pairs") or {}).items():
            row = moved.setdefault(symbol, [0, 0])
            row[0] += int(net)
            row[1] += int(flying)
    # (an engine shard that cannot answer fails the audit only where perps are in use)
    perps = bool(moved) or any(eng.get("pairs") for eng in engines)
    for eng in engines:
        if "error" in eng:
            if perps:
                lines.append(f"engine shard {eng['engine']}: ERROR {eng['error']}")
                ok = False
            continue
        for symbol, t in sorted((eng.get("pairs") or {}).items()):
            net, flying = moved.get(symbol, [0, 0])
            bad = pair_violations(t, None if flying else net)
            ok = ok and not bad
            state = f"VIOLATION ({'; '.join(bad)})" if bad else "ok"
            lines.append(
                f"{symbol:<12} collateral {t['collateral']}  fund {t['fund']}  uncovered "
                f"{t['uncovered']}  margin moved {net}"
                + (f" ({flying} moves in flight: not compared)" if flying else "")
                + f"  units of tick x lot  {state}"
            )
    return lines, ok

"""The public JSON form of an account shard's events (tuples of ``shardex.accounts.codes``).

One function for every reader: ``shardex replay`` prints it, and the bridge writes the
``balance``, ``fees`` and ``fill`` objects (plus the shard) as the entries of
``shardex:balances:<j>``, so what a journal replay shows and what Redis holds are the same
fields by construction.
Amounts are the asset's exact decimal strings (``AssetTable.fmt``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shardex.accounts.assets import AssetTable
from shardex.accounts.codes import AE_NAMES, reject_name
from shardex.engine.markets import Market
from shardex.wire.layouts import AE_KIND, AE_SEQ
from shardex.wire.protocol import command_to_json


def account_event_to_json(ev: tuple, assets: AssetTable, markets: Mapping[str, Market],
                          ts: int | None = None) -> dict:  # fmt: skip
    """An account shard event → JSON object (``ev`` is the kind's name in ``AE_NAMES``), with
    ``"ts"`` (its exchange time, ms since the Unix epoch, UTC) when ``ts`` is known;
    ValueError for an unknown kind."""
    obj = _account_json(ev, assets, markets)
    if ts is not None:
        obj["ts"] = ts
    return obj


def _account_json(ev: tuple, assets: AssetTable, markets: Mapping[str, Market]) -> dict:
    kind, seq = ev[AE_KIND], ev[AE_SEQ]
    name = AE_NAMES[kind] if type(kind) is int and 0 <= kind < len(AE_NAMES) else None
    if name == "balance":
        _, _, account, asset, avail, held, why, ref = ev
        return {"ev": name, "account": account, "asset": asset,
                "available": assets.fmt(asset, avail), "held": assets.fmt(asset, held),
                "why": why, "ref": ref, "seq": seq}  # fmt: skip
    if name == "fees":
        _, _, asset, total = ev
        return {"ev": name, "asset": asset, "total": assets.fmt(asset, total), "seq": seq}
    if name == "fill":
        _, _, account, symbol, oid, ref, role, bps, fee, asset = ev
        return {"ev": name, "account": account, "symbol": symbol, "id": oid, "ref": ref,
                "role": role, "fee_bps": bps, "fee": assets.fmt(asset, fee), "fee_asset": asset,
                "seq": seq}  # fmt: skip
    if name == "fee_group":
        _, _, account, group, tier = ev
        return {"ev": name, "account": account, "group": group, "tier": tier, "seq": seq}
    if name == "restricted":
        _, _, account, restricted = ev
        return {"ev": name, "account": account, "restricted": restricted, "seq": seq}
    if name == "listed":
        _, _, symbol, base, quote, base_unit, quote_unit, fee = ev
        return {"ev": name, "symbol": symbol, "base": base, "quote": quote,
                "base_unit": base_unit, "quote_unit": quote_unit, "maker_bps": fee[0],
                "taker_bps": fee[1], "seq": seq}  # fmt: skip
    if name == "rejected":
        _, _, account, ref, reason, code = ev
        return {"ev": name, "account": account, "ref": ref, "reason": reason,
                "code": reject_name(code), "seq": seq}  # fmt: skip
    if name == "repeated":
        _, _, account, ref = ev
        return {"ev": name, "account": account, "ref": ref, "seq": seq}
    if name == "forward":
        _, _, eshard, prev, fwd = ev
        try:
            cmd: Any = command_to_json(fwd, markets)
        except (KeyError, ValueError, TypeError, IndexError):
            cmd = repr(fwd)
        return {"ev": name, "shard": eshard, "prev": prev, "command": cmd, "seq": seq}
    if name == "gap":
        _, _, eshard, have, prev, eseq = ev
        return {"ev": name, "shard": eshard, "have": have, "prev": prev, "eseq": eseq,
                "seq": seq}  # fmt: skip
    if name == "anomaly":
        _, _, eshard, eseq, reason = ev
        return {"ev": name, "shard": eshard, "eseq": eseq, "reason": reason, "seq": seq}
    raise ValueError(f"unknown account event kind {kind!r}")

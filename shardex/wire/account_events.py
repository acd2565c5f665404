"""The public JSON form of an account shard's events (tuples of ``shardex.accounts.codes``).

One function for every reader: ``shardex replay`` prints it, and the bridge writes the
``balance`` and ``fees`` objects (plus the shard) as the entries of ``shardex:balances:<j>``,
so what a journal replay shows and what Redis holds are the same fields by construction.
Amounts are the asset's exact decimal strings (``AssetTable.fmt``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shardex.accounts.assets import AssetTable
from shardex.accounts.codes import AE_NAMES, reject_name
from shardex.engine.markets import Market
from shardex.wire.protocol import command_to_json


def account_event_to_json(ev: tuple, assets: AssetTable, markets: Mapping[str, Market]) -> dict:
    """An account shard event → JSON object (``ev`` is the kind's name in ``AE_NAMES``);
    ValueError for an unknown kind."""
    kind, seq = ev[0], ev[1]
    name = AE_NAMES[kind] if type(kind) is int and 0 <= kind < len(AE_NAMES) else None
    if name == "balance":
        _, _, account, asset, avail, held, why, ref = ev
        return {"ev": name, "account": account, "asset": asset,
                "available": assets.fmt(asset, avail), "held": assets.fmt(asset, held),
                "why": why, "ref": ref, "seq": seq}  # fmt: skip
    if name == "fees":
        return {"ev": name, "asset": ev[2], "total": assets.fmt(ev[2], ev[3]), "seq": seq}
    if name == "rejected":
        return {"ev": name, "account": ev[2], "ref": ev[3], "reason": ev[4],
                "code": reject_name(ev[5]), "seq": seq}  # fmt: skip
    if name == "repeated":
        return {"ev": name, "account": ev[2], "ref": ev[3], "seq": seq}
    if name == "forward":
        try:
            cmd: Any = command_to_json(ev[4], markets)
        except (KeyError, ValueError, TypeError, IndexError):
            cmd = repr(ev[4])
        return {"ev": name, "shard": ev[2], "prev": ev[3], "command": cmd, "seq": seq}
    if name == "gap":
        return {"ev": name, "shard": ev[2], "have": ev[3], "prev": ev[4], "eseq": ev[5],
                "seq": seq}  # fmt: skip
    if name == "anomaly":
        return {"ev": name, "shard": ev[2], "eseq": ev[3], "reason": ev[4], "seq": seq}
    raise ValueError(f"unknown account event kind {kind!r}")

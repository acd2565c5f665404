"""Deposits and withdrawals of an account shard, idempotent by ref within a window (pure)."""

from __future__ import annotations

from typing import Any

from shardex.accounts.assets import MAX_UNITS
from shardex.accounts.codes import (
    A_DEPOSIT,
    REJ_UNKNOWN_ASSET,
)
from shardex.accounts.ledger import AVAIL, Ledger, _f, _ident, _q, account_shard_for
from shardex.engine.codes import (
    MAX_ID_LEN,
    REJ_MALFORMED,
    REJ_OUT_OF_RANGE,
    REJ_WRONG_SHARD,
)
from shardex.wire.layouts import XFER_ACCOUNT, XFER_REF


class Transfers(Ledger):
    """The ``deposit`` and ``withdraw`` commands of ``AccountCore``."""

    def _transfer(self, cmd: Any, out: list[tuple]) -> None:
        if len(cmd) != 5:
            return self._reject(
                _f(cmd, XFER_ACCOUNT),
                _f(cmd, XFER_REF),
                "transfer: expected 5 fields",
                REJ_MALFORMED,
                out,
            )
        op, account, asset, amount, ref = cmd
        refused = self._transfer_refusal(op, account, asset, amount, ref)
        if refused:
            return self._reject(account, ref, *refused, out)
        what = "deposit" if op == A_DEPOSIT else "withdraw"
        if self._seen_ref(ref, (op, account, asset, amount), out):
            return None
        cell = self._found(account, asset)
        avail = cell[AVAIL] if cell else 0
        if op == A_DEPOSIT:
            total = self._total(asset)
            if total + amount > MAX_UNITS:
                return self._reject(
                    account,
                    ref,
                    f"deposit would take this shard's {asset} "
                    f"above {self.table.fmt(asset, MAX_UNITS)}",
                    REJ_OUT_OF_RANGE,
                    out,
                )
            cell = self._cell(account, asset)
            cell[AVAIL] += amount
            self.deposited[asset] = self.deposited.get(asset, 0) + amount
        else:
            if amount > avail:
                return self._insufficient(account, ref, asset, avail, amount, out)
            cell = self._cell(account, asset)
            cell[AVAIL] -= amount
            self.withdrawn[asset] = self.withdrawn.get(asset, 0) + amount
        self._remember(ref, (op, account, asset, amount))
        self._bal(out, account, asset, what, ref)
        return None

    def _transfer_refusal(
        self, op: object, account: object, asset: object, amount: object, ref: object
    ) -> tuple[str, int] | None:
        """Why a transfer's fields cannot be applied here (reason, code), or None; checked in
        this order, before the dedup window is looked at."""
        if not _ident(account) or not _ident(ref):
            return f"account and ref must be strings of 1..{MAX_ID_LEN} chars", REJ_MALFORMED
        if not self.owns(account):
            return (
                f"account {account} belongs to account shard "
                f"{account_shard_for(account, self.shards)}",
                REJ_WRONG_SHARD,
            )
        if type(asset) is not str or asset not in self.table.units:
            return f"unknown asset {_q(asset, 40)}", REJ_UNKNOWN_ASSET
        if self.table.perp_base(asset):
            return (f"{asset} is a perp pair's base, not an asset: a position lives on its "
                    "engine shard; move the settle asset into margin instead",
                    REJ_UNKNOWN_ASSET)  # fmt: skip
        if type(amount) is not int:
            return "amount must be an integer number of units", REJ_MALFORMED
        if amount <= 0:
            what = "deposit" if op == A_DEPOSIT else "withdraw"
            return f"{what} amount must be > 0", REJ_OUT_OF_RANGE
        return None

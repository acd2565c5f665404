"""Fee groups on an account shard: the journaled admin command that puts an account in a fee
group, and the read of an account's rates (pure; the schedule itself is ``fees``)."""

from __future__ import annotations

from typing import Any

from shardex.accounts.codes import AE_FEE_GROUP
from shardex.accounts.fees import DAY_MS, MAX_TIER_NAME
from shardex.accounts.ledger import Ledger, _f, _ident, _q, account_shard_for
from shardex.engine.codes import REJ_INVALID, REJ_MALFORMED, REJ_WRONG_SHARD
from shardex.wire.layouts import CMD_ACCOUNT


class FeeTiers(Ledger):
    """The ``fee_group`` command of ``AccountCore`` and the ``fee_info`` read."""

    def _fee_group(self, cmd: Any, out: list[tuple]) -> None:
        if len(cmd) != 3:
            return self._reject(_f(cmd, CMD_ACCOUNT), "", "fee_group: expected 3 fields",
                                REJ_MALFORMED, out)  # fmt: skip
        _, account, group = cmd
        if not _ident(account) or type(group) is not str or len(group) > MAX_TIER_NAME:
            return self._reject(account, "", "fee_group: expected an account and a group name",
                                REJ_MALFORMED, out)  # fmt: skip
        if not self.owns(account):
            shard = account_shard_for(account, self.shards)
            return self._reject(account, "", f"account {account} belongs to account shard "
                                f"{shard}", REJ_WRONG_SHARD, out)  # fmt: skip
        if group and group not in self.schedule.rank:
            names = ", ".join(t.name for t in self.schedule.tiers)
            return self._reject(account, "", f"unknown fee group {_q(group, 40)} (the tiers: "
                                f"{names})", REJ_INVALID, out)  # fmt: skip
        if group:
            self.groups[account] = group
        else:
            self.groups.pop(account, None)
        self.seq += 1
        tier = self.schedule.tiers[self.tier(account)].name
        out.append((AE_FEE_GROUP, self.seq, account, group, tier))
        return None

    def fee_info(self, account: str) -> dict[str, Any]:
        """``account``'s fee group, tier, 30-day volumes (units) and the rates an order of it
        placed now gets on every market (a read: changes nothing)."""
        sch = self.schedule
        tier = sch.tiers[self.tier(account)]
        volume = {}
        if self.now_ms is not None:
            volume = self.volumes.volume(account, self.now_ms // DAY_MS)
        return {
            "group": self.groups.get(account, ""),
            "tier": tier.name,
            "volume": volume,
            "rates": {s: list(f) for s, f in sorted(tier.rates.items())},
            "tiers": [[t.name, t.asset, t.min_volume] for t in sch.tiers],
        }

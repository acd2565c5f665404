"""Restricted accounts on an account shard: the journaled admin command that restricts or
unrestricts an account, and the check that refuses a restricted account's new orders, amends
and withdrawals (pure, like the rest of ``AccountCore``).

A restricted account keeps its balances and resting orders; it cannot add risk or take money
out (``account_restricted``), but cancels (which go straight to the engine shards) still run,
so an account under review can always reduce what it has in the books. Deposits still run
(money arriving is not refused). Perp margin: a move **in** runs (more collateral under a
position only lowers the venue's risk: refusing it could force a liquidation, and deleveraging
of others, the account wanted to avoid); a move **out** is refused (it takes collateral out
from under a position, and money stays where it is while the account is under review).

The set is state (in snapshots); ``(A_RESTRICT, account, restricted)`` is journaled, so replay
and standbys agree.
"""

from __future__ import annotations

from typing import Any

from shardex.accounts.codes import A_MARGIN, A_WITHDRAW, AE_RESTRICTED
from shardex.accounts.ledger import Ledger, _f, _ident, account_shard_for
from shardex.engine.codes import REJ_ACCOUNT_RESTRICTED, REJ_MALFORMED, REJ_WRONG_SHARD
from shardex.wire.layouts import CMD_ACCOUNT, CMD_ID, XFER_ACCOUNT, XFER_AMOUNT, XFER_REF


class Restrictions(Ledger):
    """The ``restrict`` command of ``AccountCore`` and the refusal of a restricted account."""

    def _restrict(self, cmd: Any, out: list[tuple]) -> None:
        if len(cmd) != 3 or not _ident(cmd[1]) or type(cmd[2]) is not bool:
            return self._reject(_f(cmd, CMD_ACCOUNT), "", "restrict: expected (op, account, "
                                "restricted: bool)", REJ_MALFORMED, out)  # fmt: skip
        _, account, restricted = cmd
        if not self.owns(account):
            shard = account_shard_for(account, self.shards)
            return self._reject(account, "", f"account {account} belongs to account shard "
                                f"{shard}", REJ_WRONG_SHARD, out)  # fmt: skip
        if restricted:
            self.restricted.add(account)
        else:
            self.restricted.discard(account)
        self.seq += 1
        out.append((AE_RESTRICTED, self.seq, account, restricted))
        return None

    def _refused_restricted(self, op: int, cmd: Any, out: list[tuple]) -> bool:
        """Refuse (one ``rejected`` event) a new order, amend, withdrawal or margin move out
        of a restricted account; False (nothing done) for any other account or command."""
        xfer = op in (A_WITHDRAW, A_MARGIN)  # (both: account and ref where a transfer's are)
        account = cmd[XFER_ACCOUNT if xfer else CMD_ACCOUNT]
        if type(account) is not str or account not in self.restricted:
            return False
        if op == A_MARGIN and not (len(cmd) == 5 and type(cmd[XFER_AMOUNT]) is int
                                   and cmd[XFER_AMOUNT] < 0):  # fmt: skip
            return False  # (in: allowed; a malformed move is refused by ``_margin``)
        ref = cmd[XFER_REF if xfer else CMD_ID]
        self._reject(account, ref, f"account {account} is restricted", REJ_ACCOUNT_RESTRICTED,
                     out)  # fmt: skip
        return True

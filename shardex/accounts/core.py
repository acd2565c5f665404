"""The account shard's state machine: balances, holds before matching, settlement after it.

Pure like ``shardex.engine``: no sockets, no clock, no I/O, no randomness. One ``AccountCore`` is
account shard J of M: it owns the accounts with ``crc32(account) % M == J`` and is their single
writer. Commands in (tuples, see ``shardex.accounts.codes``), events out, one seq. The same
commands give the same events, so the process around it can journal its inputs, snapshot, and
recover by replay exactly as an engine shard does.

Money rules (what a risk officer checks):

* Amounts are integer units of each asset (``shardex.accounts.assets``); no float anywhere.
* A new order holds, before it is forwarded to its engine shard, the most it can ever cost:
  a buy ``cap × qty`` of quote (``cap``: its limit price; for a market buy the highest price its
  budget pays for all of ``qty``) plus the fee at the taker rate; a sell ``qty`` of base.
* Per order the fee charged so far is ``ceil(Σ notional_i × bps_i / 10000)`` (taker or maker rate
  per fill): rounded up, so the venue never under-collects, and cumulative, so the sum of the
  fills' fees never exceeds the fee that was held. Sellers pay their fee out of the proceeds.
* After each settlement an order's hold is recomputed as exactly what its open remainder can
  still cost (``required``); the difference (price improvement, fee slack) goes back to
  ``available``. ``check_integrity`` proves held == Σ required and the conservation identity.
* Validate before mutate: a command that does not fit changes nothing and yields one
  ``rejected`` (client command) or ``anomaly`` (settlement) event. No input raises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from shardex.accounts.assets import Fee
from shardex.accounts.codes import (
    A_AMEND,
    A_DEPOSIT,
    A_FEE_GROUP,
    A_LIST,
    A_MARGIN,
    A_NEW,
    A_RESTRICT,
    A_WITHDRAW,
    S_AMENDED,
    S_CANCELLED,
    S_MARGIN,
    S_REJECTED,
    S_TRADE,
)
from shardex.accounts.fees import FeeSchedule
from shardex.accounts.holds import Holds, _budget_cap  # noqa: F401 - old import path
from shardex.accounts.ledger import (  # noqa: F401 - the moved names stay importable from here
    _BPS,
    AVAIL,
    HELD,
    MAX_REASON_LEN,
    REF_WINDOW,
    HeldOrder,
    Ledger,
    _ceil_div,
    _f,
    _ident,
    _q,
    account_shard_for,
    required,
)
from shardex.accounts.link import Inbox, Outbox
from shardex.accounts.listing import Listings
from shardex.accounts.margin import Margins
from shardex.accounts.restrict import Restrictions
from shardex.accounts.settlements import Settlements
from shardex.accounts.tiers import FeeTiers
from shardex.accounts.transfers import Transfers
from shardex.engine.book import IntegrityError
from shardex.engine.codes import (
    BUY,
    REJ_MALFORMED,
    REJ_UNKNOWN_OP,
)
from shardex.engine.markets import Market
from shardex.wire.layouts import CMD_ACCOUNT, CMD_OP

_RESTRICTED = (A_NEW, A_AMEND, A_WITHDRAW, A_MARGIN)  # what a restricted account may not do


class AccountCore(Transfers, Holds, Settlements, FeeTiers, Restrictions, Listings, Margins):
    """Account shard ``shard`` of ``shards``. Not thread-safe by design: one writer calls it.

    The state and its helpers are ``Ledger``'s; each concern is a mixin of its own module:
    ``Transfers``, ``Holds`` (new orders, amends), ``Settlements`` and ``FeeTiers``."""

    # ------------------------------------------------------------------ public API

    def apply(self, cmd: Any, out: list[tuple]) -> None:
        """Apply one command or settlement, appending its events to ``out``. Never raises on
        input: every shape problem is found before anything changes."""
        try:
            op = cmd[CMD_OP]
        except Exception:
            return self._reject("", "", "malformed command", REJ_MALFORMED, out)
        try:
            if op == A_NEW and not self.restricted:  # (most commands: the first test)
                return self._new(cmd, out)
            if op in (S_TRADE, S_CANCELLED, S_REJECTED, S_AMENDED, S_MARGIN):
                return self._settle(cmd, out)
            if self.restricted and op in _RESTRICTED and self._refused_restricted(op, cmd, out):
                return None
            if op == A_NEW:
                return self._new(cmd, out)
            if op == A_AMEND:
                return self._amend(cmd, out)
            if op in (A_DEPOSIT, A_WITHDRAW):
                return self._transfer(cmd, out)
            if op == A_FEE_GROUP:
                return self._fee_group(cmd, out)
            if op == A_RESTRICT:
                return self._restrict(cmd, out)
            if op == A_LIST:
                return self._list(cmd, out)
            if op == A_MARGIN:
                return self._margin(cmd, out)
            return self._reject(
                _f(cmd, CMD_ACCOUNT), "", f"unknown op {_q(op, 20)}", REJ_UNKNOWN_OP, out
            )
        except (TypeError, ValueError, IndexError, KeyError, AttributeError, OverflowError):
            # Only shape checks can raise, and they all run before the first mutation.
            return self._reject(_f(cmd, CMD_ACCOUNT), "", "malformed command", REJ_MALFORMED, out)

    def apply_many(self, cmds: Any) -> list[tuple]:
        out: list[tuple] = []
        for cmd in cmds:
            self.apply(cmd, out)
        return out

    # ------------------------------------------------------------------ state

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to continue identically, as msgpack-able plain data (lists of
        pairs, not int-keyed maps). Version 1."""
        return {
            "version": 1,
            "shard": self.shard,
            "shards": self.shards,
            "seq": self.seq,
            "balances": [
                [acct, asset, cell[AVAIL], cell[HELD]]
                for acct in sorted(self.balances)
                for asset, cell in sorted(self.balances[acct].items())
            ],
            "orders": [[*key, *o.as_tuple()] for key, o in self.orders.items()],
            "fees": sorted(self.fees.items()),
            "rebates": sorted(self.rebates.items()),
            "groups": sorted(self.groups.items()),
            "restricted": sorted(self.restricted),
            "listed": self.listed_rows(),
            "volumes": self.volumes.snapshot(),
            "deposited": sorted(self.deposited.items()),
            "withdrawn": sorted(self.withdrawn.items()),
            "flow": sorted(self.flow.items()),
            "margin": [[a, s, v] for (a, s), v in sorted(self.margin.items())],
            "margin_moves": [[seq, *m] for seq, m in sorted(self.margin_moves.items())],
            "refs": [[ref, *v] for ref, v in self.refs.items()],  # oldest first
            "ref_window": self.ref_window,
            "inbox": sorted(self.inbox.last.items()),
            "outbox": sorted(self.outbox.last.items()),
        }

    @classmethod
    def restore(
        cls,
        state: Mapping[str, Any],
        markets: Mapping[str, Market],
        fees: Mapping[str, Fee] | None = None,
        engine_for: Callable[[str], int] | None = None,
        ref_window: int = REF_WINDOW,
        schedule: FeeSchedule | None = None,
    ) -> AccountCore:
        """A core that continues exactly where the one that made ``state`` stood.

        The dedup window is the snapshot's own (``ref_window`` applies only to a snapshot
        made before the window existed): the journal after the snapshot was written under
        it, so a replay evicts the same refs as the live run did. Raises ValueError when the
        state is not usable (unknown version, an asset or market this table lacks, a bad
        window, or a state that fails ``check_integrity``).
        """
        try:
            if state.get("version") != 1:
                raise ValueError(f"account snapshot version {state.get('version')!r} unknown")
            window = state.get("ref_window", ref_window)
            core = cls(markets, state["shard"], state["shards"], fees, engine_for, state["seq"],
                       window, schedule)  # fmt: skip
            core.restore_listed(state.get("listed", ()))  # (before balances in their assets)
            units = core.table.units
            for acct, asset, avail, held in state["balances"]:
                if asset not in units:
                    raise ValueError(f"balance in unknown asset {asset!r}")
                core.balances.setdefault(acct, {})[asset] = [int(avail), int(held)]
            for acct, symbol, oid, *fields in state["orders"]:
                if symbol not in core.table.pairs:
                    raise ValueError(f"open order of unknown market {symbol!r}")
                o = core.orders[(acct, symbol, oid)] = HeldOrder(*fields)
                core.open_by.setdefault(acct, {})[(symbol, oid)] = o
            for name in ("fees", "deposited", "withdrawn", "flow", "rebates"):
                target = getattr(core, name)
                rows = state.get(name, ()) if name == "rebates" else state[name]  # (newer only)
                for asset, amount in rows:
                    if asset not in units:
                        raise ValueError(f"{name} in unknown asset {asset!r}")
                    target[asset] = int(amount)
            for ref, op, acct, asset, amount in state["refs"]:
                core._remember(ref, (op, acct, asset, amount))  # (an older, larger set: trimmed)
            for acct, symbol, amount in state.get("margin", ()):  # (older snapshots: none)
                core.margin[(acct, symbol)] = int(amount)
            for seq, acct, symbol, amount in state.get("margin_moves", ()):
                core.margin_moves[int(seq)] = (acct, symbol, int(amount))
            core.groups = {str(a): str(g) for a, g in state.get("groups", ())}
            core.restricted = {str(a) for a in state.get("restricted", ())}
            core.volumes.restore(state.get("volumes", ()))
            core.inbox = Inbox({int(k): int(v) for k, v in state["inbox"]})
            core.outbox = Outbox({int(k): int(v) for k, v in state["outbox"]})
            core.check_integrity()
        except IntegrityError as exc:
            raise ValueError(f"account snapshot fails its checks: {exc}") from None
        except (KeyError, TypeError) as exc:
            raise ValueError(f"account snapshot unusable ({exc!r})") from None
        return core

    def _check_open_by(self, mine: dict[str, set[tuple[str, str]]]) -> None:
        """``open_by`` (what reads look up) against ``mine``, the open orders found per
        account (the very ``HeldOrder`` of each): IntegrityError naming the first account
        that is off."""
        orders = self.orders
        kept = {a: set(keys) for a, keys in self.open_by.items()}
        stale = next((a for a, keys in self.open_by.items()
                      if any(orders.get((a, *k)) is not o for k, o in keys.items())),
                     None)  # fmt: skip
        if stale is not None:
            raise IntegrityError(f"{stale[:64]}: its index holds another order than its own")
        if kept != mine:
            acct = next(a for a in {*mine, *kept} if kept.get(a) != mine.get(a))
            have, listed = mine.get(acct, set()), kept.get(acct, set())
            raise IntegrityError(
                f"{acct[:64]}: {len(have - listed)} open orders not in its index, "
                f"{len(listed - have)} indexed not open"
            )

    def check_integrity(self) -> None:
        """Raise IntegrityError unless the books balance:

        * every balance and every order's hold >= 0, every order owned here and of a known pair;
        * a buy holds at its price, or higher only while an amend is in flight;
        * every order's hold == ``required`` (what its open remainder can still cost) and each
          account's held == Σ of its open orders' holds, per asset;
        * ``open_by`` indexes exactly each account's open orders;
        * margin records and moves are of this shard's accounts on perp pairs;
        * per asset: Σ(available + held) + fees + in margin (``Margins.in_margin``) ==
          deposits - withdrawals + net trade inflow
          (the inflows of all account shards sum to 0, so across shards it is the issue's
          identity Σ(available + held) + fees == deposits - withdrawals).
        """
        held: dict[tuple[str, str], int] = {}
        mine: dict[str, set[tuple[str, str]]] = {}
        for (acct, symbol, oid), o in self.orders.items():
            pair = self.table.pairs.get(symbol)
            if pair is None or o.symbol != symbol or not self.owns(acct):
                raise IntegrityError(f"order {oid} of {acct} on {symbol} does not belong here")
            if o.rem <= 0 or o.held < 0 or o.pending < 0:
                raise IntegrityError(f"order {oid}: open {o.rem}, held {o.held}")
            if (
                o.side == BUY
                and o.price is not None
                and (o.cap < o.price or (not o.pending and o.cap != o.price))
            ):
                raise IntegrityError(
                    f"order {oid}: holds at {o.cap}, price {o.price}, {o.pending} amends in flight"
                )
            need = required(o, pair)
            if o.held != need:
                raise IntegrityError(f"order {oid} of {acct}: holds {o.held}, can cost {need}")
            asset = pair.quote if o.side == BUY else pair.base
            held[(acct, asset)] = held.get((acct, asset), 0) + o.held
            mine.setdefault(acct, set()).add((symbol, oid))
        self._check_open_by(mine)
        totals: dict[str, int] = {}
        for acct, assets in self.balances.items():
            if not self.owns(acct):
                raise IntegrityError(f"balance of account {acct} of another shard")
            for asset, (avail, h) in assets.items():
                if avail < 0 or h < 0:
                    raise IntegrityError(f"{acct} {asset}: available {avail}, held {h}")
                if h != held.get((acct, asset), 0):
                    raise IntegrityError(
                        f"{acct} {asset}: held {h}, open orders hold {held.get((acct, asset), 0)}"
                    )
                totals[asset] = totals.get(asset, 0) + avail + h
        self._check_margin()
        self._check_totals(totals)

    def _check_totals(self, totals: dict[str, int]) -> None:
        """Per asset: the fee ledger's collected and rebates >= 0, and balances (``totals``) +
        fees + in margin == deposits - withdrawals + net trade inflow (IntegrityError)."""
        margined = self.in_margin()
        for asset in self.table.units:
            # The ledger is net of rebates: negative on a shard whose makers were paid rebates
            # that other shards' takers paid for; what it collected (fees + rebates) is not.
            paid = self.rebates.get(asset, 0)
            if paid < 0 or self.fees.get(asset, 0) + paid < 0:
                raise IntegrityError(f"fee ledger {asset}: collected or rebates negative")
            have = totals.get(asset, 0) + self.fees.get(asset, 0) + margined.get(asset, 0)
            if have != self._total(asset):
                raise IntegrityError(
                    f"{asset}: balances + fees + margin {have} != deposits - withdrawals"
                    f" + inflow {self._total(asset)}"
                )

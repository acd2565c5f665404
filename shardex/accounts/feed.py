"""The engine shard's half of settlement: engine events → settlement messages per account shard.

Pure and deterministic, so an engine shard rebuilt from its journal re-sends byte-identical
messages (the account shards skip them as duplicates). It runs in the engine shard process next
to the ``Engine``: after each command it gets the command, the events it produced and the
``cause`` (the account shard's seq of the forward that carried the command), and returns the
messages to send, each addressed to one account shard (layouts in ``shardex.accounts.codes``).

The engine's events name orders by id only; settlements need the accounts (to find the account
shard and the order there). The feed keeps ``(symbol, id) → [account, open lots]`` for the live
orders of its engine shard, from the commands and events it sees. That duplicates what the
books hold (one small list per live order); an engine event carrying the maker's account would
make it unnecessary (see docs/accounts.md, "changes asked of files I do not own").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shardex.accounts.codes import S_AMENDED, S_CANCELLED, S_MARGIN, S_REJECTED, S_TRADE
from shardex.accounts.core import account_shard_for
from shardex.accounts.link import Outbox
from shardex.engine.codes import (
    EV_ACCEPTED,
    EV_AMENDED,
    EV_CANCELLED,
    EV_MARGIN,
    EV_REJECTED,
    EV_TRADE,
    MAX_ID_LEN,
    OP_AMEND,
    OP_NEW,
)
from shardex.wire.layouts import (
    CMD_ACCOUNT,
    CMD_OP,
    EV_ID,
    EV_KIND,
    EV_SYMBOL,
    NEW_QTY,
    S_ESEQ,
    S_PREV,
)

_ACCOUNT, _OPEN = 0, 1  # a live order's record: [account, open lots]
_AFTER_PREV = S_PREV + 1
_SHARD_0 = (0,)  # (``SettlementFeed._sides`` with one account shard)


class SettlementFeed:
    """Engine shard ``eshard``'s settlement stage for ``shards`` account shards."""

    def __init__(self, eshard: int, shards: int) -> None:
        if type(shards) is not int or shards < 1:
            raise ValueError(f"account shards must be an int >= 1, got {shards!r}")
        self.eshard = eshard
        self.shards = shards
        self.live: dict[tuple[str, str], list] = {}  # (symbol, id) → [account, open lots]
        self.outbox = Outbox()

    def route(
        self,
        cmd: tuple,
        events: list[tuple],
        cause: int | None = None,
        origin: int | None = None,
    ) -> list[tuple[int, tuple]]:
        """The settlement messages of one applied command, as ``(account shard, message)`` in
        event order. ``cause`` None means the command did not come from an account shard (a
        direct or legacy order): its refusals settle nothing.

        ``origin`` is the account shard that forwarded the command: a refusal is settled back
        to it, whatever the command says (it holds the funds; a forward this engine shard
        refused because it names an account of another account shard, a symbol of another
        engine shard, or is not of a forward's shape, must still release that hold). Its
        account is echoed when it is a bounded string, else ``""`` (the account shard then
        finds the order by ``cause``)."""
        out: list[tuple[int, tuple]] = []
        op = cmd[CMD_OP] if type(cmd) is tuple and cmd else None
        account = cmd[CMD_ACCOUNT] if op in (OP_NEW, OP_AMEND) and len(cmd) > CMD_ACCOUNT else None
        live = self.live
        for ev in events:
            kind = ev[EV_KIND]
            if kind == EV_ACCEPTED:
                if account is not None:  # (else the engine's own order: a liquidation's)
                    live[(ev[EV_SYMBOL], ev[EV_ID])] = [account, cmd[NEW_QTY]]
            elif kind == EV_TRADE:
                _, seq, symbol, price, qty, tid, mid, tside, trade_id = ev
                taker = live.get((symbol, tid))
                maker = live[(symbol, mid)]
                t_acct = taker[_ACCOUNT] if taker else account
                for key, rec in (((symbol, tid), taker), ((symbol, mid), maker)):
                    if rec is not None:
                        rec[_OPEN] -= qty
                        if not rec[_OPEN]:
                            del live[key]
                if t_acct is not None and self.shards == 1:  # (``_sides``, ``_put``, inline)
                    prev = self.outbox.put(0, seq)
                    msg = (S_TRADE, self.eshard, seq, prev, symbol, price, qty, t_acct or "",
                           tid, maker[_ACCOUNT], mid, tside, trade_id)  # fmt: skip
                    out.append((0, msg))
                    continue
                msg = (S_TRADE, self.eshard, seq, 0, symbol, price, qty, t_acct or "", tid,
                       maker[_ACCOUNT], mid, tside, trade_id)  # fmt: skip
                if t_acct is None:  # (a liquidation's order: no account shard holds it)
                    out.append(self._put(self._shard(maker[_ACCOUNT]), msg))  # (its maker's)
                    continue
                for j in self._sides(t_acct, maker[_ACCOUNT]):
                    out.append(self._put(j, msg))
            elif kind == EV_CANCELLED:
                _, seq, symbol, oid, reason, qty = ev
                rec = live.pop((symbol, oid), None)
                if rec is None and account is None:
                    continue  # (a liquidation order's unfilled rest: nobody holds it)
                owner = rec[_ACCOUNT]  # type: ignore[index]  # (KeyError-like: an anomaly)
                msg = (S_CANCELLED, self.eshard, seq, 0, symbol, owner, oid, reason, qty)
                out.append(self._put(self._shard(owner), msg))
            elif kind in (EV_AMENDED, EV_MARGIN, EV_REJECTED):
                self._answer(ev, op, account, cause, origin, out)
        return out

    def _answer(self, ev: tuple, op: Any, account: Any, cause: int | None,
                origin: int | None, out: list[tuple[int, tuple]]) -> None:  # fmt: skip
        """An amend's, a margin move's or a refusal's settlement (``route``), if any."""
        kind = ev[EV_KIND]
        msg: tuple
        if kind == EV_AMENDED:
            _, seq, symbol, oid, qty, price = ev
            rec = self.live[(symbol, oid)]
            rec[_OPEN] = qty
            msg = (S_AMENDED, self.eshard, seq, 0, symbol, rec[_ACCOUNT], oid, qty, price)
            out.append(self._put(self._shard(rec[_ACCOUNT]), msg))
        elif kind == EV_MARGIN and origin is not None:
            _, seq, symbol, m_acct, units, _collateral = ev
            msg = (S_MARGIN, self.eshard, seq, 0, symbol, m_acct, units, cause)
            out.append(self._put(origin, msg))
        elif kind == EV_REJECTED and cause is not None:
            _, seq, symbol, oid, _reason, code = ev
            named = type(account) is str and 0 < len(account) <= MAX_ID_LEN
            if origin is None and not named:
                return  # (no origin and no account: nobody to settle with)
            j = origin if origin is not None else self._shard(account)
            msg = (S_REJECTED, self.eshard, seq, 0, symbol, account if named else "", oid,
                   op if type(op) is int else -1, code, cause)  # fmt: skip
            out.append(self._put(j, msg))

    def _shard(self, account: str) -> int:
        return account_shard_for(account, self.shards)

    def _sides(self, taker: str, maker: str) -> Iterable[int]:
        """The account shards a trade settles with: each side's, once (one account shard:
        shard 0, without hashing either account)."""
        if self.shards == 1:
            return _SHARD_0
        return dict.fromkeys((self._shard(taker), self._shard(maker)))

    def _put(self, j: int, msg: tuple) -> tuple[int, tuple]:
        prev = self.outbox.put(j, msg[S_ESEQ])
        return j, msg[:S_PREV] + (prev,) + msg[_AFTER_PREV:]

    def snapshot(self) -> dict[str, Any]:
        return {
            "eshard": self.eshard,
            "shards": self.shards,
            "live": [[s, i, a, q] for (s, i), (a, q) in self.live.items()],
            "outbox": sorted(self.outbox.last.items()),
        }

    @classmethod
    def restore(cls, state: Mapping[str, Any]) -> SettlementFeed:
        feed = cls(state["eshard"], state["shards"])
        feed.live = {(s, i): [a, q] for s, i, a, q in state["live"]}
        feed.outbox = Outbox({int(k): int(v) for k, v in state["outbox"]})
        return feed

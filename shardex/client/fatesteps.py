"""The decisions about commands whose outcome is open, written once: which to ask about, the
fate questions as a dialogue (``fate_steps``) that each caller runs with its own I/O (the two
clients, ``shardex loadgen``'s ``FateTracker``), and the ``Retry`` rounds' plan. A mixin of
``ClientCore``; no I/O here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shardex.client.errors import (
    ShardexError,
    _kept,
    _malformed,
    retryable,
    stale_topology,
    uncertain,
    unsent,
)
from shardex.client.results import (
    EXECUTED,
    NOT_EXECUTED,
    UNKNOWN,
    FateSteps,
    Result,
    _is_int,
    fate_from_state,
)
from shardex.engine.codes import OP_AMEND, OP_CANCEL, OP_NEW, Command
from shardex.wire.errors import ErrorText, result_error
from shardex.wire.layouts import CMD_ACCOUNT, CMD_ID, CMD_OP, CMD_SYMBOL
from shardex.wire.protocol import OP_ORDER


def askable(cmd: Any) -> bool:
    """A write whose order can be asked about: new/cancel/amend with string symbol, id and
    account (the ``OP_ORDER`` fate query needs all three)."""
    return (
        isinstance(cmd, tuple | list)
        and len(cmd) > CMD_ACCOUNT
        and cmd[CMD_OP] in (OP_NEW, OP_CANCEL, OP_AMEND)
        and all(type(cmd[k]) is str for k in (CMD_SYMBOL, CMD_ID, CMD_ACCOUNT))
    )


class FateDecisions:
    """Fates and retries of open commands (uses ``accounts``, ``order_status_map``)."""

    accounts: int
    order_status_map: Any  # (``Replies.order_status_map``, via ``ClientCore``)

    def results(
        self,
        cmds: list[dict[str, Any]],
        decoded: list[tuple[str | None, list[dict[str, Any]]]],
        fates: Mapping[int, tuple[str, dict[str, Any] | None]] | None = None,
        attempts: list[int] | None = None,
    ) -> list[Result]:
        """Build ``Result``s; ``fates`` (index → (fate, status)) covers the uncertain ones."""
        fates = fates or {}
        out = []
        for i, (c, (err, evs)) in enumerate(zip(cmds, decoded, strict=True)):
            if i in fates:
                fate, status = fates[i]
            else:
                fate, status = (EXECUTED if err is None else NOT_EXECUTED), None
                if uncertain(err):
                    fate = UNKNOWN
            out.append(Result(c, evs, err, fate, status, attempts[i] if attempts else 1))
        return out

    # -- retries (``Retry``): the decisions, shared by both clients -----------------------------

    @staticmethod
    def retry_plan(
        tuples: list[Command],
        decoded: list[tuple[str | None, Any]],
        resolved: Mapping[int, Any],
        attempts: list[int],
    ) -> tuple[list[int], list[int]]:
        """(indexes whose fate to ask, indexes to send again now) for the next retry round.

        Asked first: every write whose last attempt may have run or was refused (only a send
        that never left this client, ``cannot reach``, goes again at once), and a retried
        ``new`` refused as ``duplicate_id`` (an earlier attempt ran: its fate says how).
        ``resolved``: indexes already settled by a fate answer."""
        ask: list[int] = []
        send: list[int] = []
        for i, (err, evs) in enumerate(decoded):
            if i in resolved or tuples[i][CMD_OP] not in (OP_NEW, OP_CANCEL, OP_AMEND):
                continue
            if err is None:
                if (
                    attempts[i] > 1
                    and tuples[i][CMD_OP] == OP_NEW
                    and any(
                        e.get("ev") == "rejected" and e.get("code") == "duplicate_id" for e in evs
                    )
                ):
                    ask.append(i)
                continue
            if not retryable(err):
                continue
            (send if unsent(err) else ask).append(i)
        return ask, send

    @staticmethod
    def topology_stale(decoded: list, last: Mapping[int, tuple[str, Any]], idx: list[int]) -> bool:
        """A direct client should ask the router for the topology again: a command or its last
        fate query reached a process that does not lead, or nothing at all (a first timeout
        too: the fate query would wait another ``timeout`` at a dead leader's port)."""
        for i in idx:
            if stale_topology(decoded[i][0]) or uncertain(decoded[i][0]) and i not in last:
                return True  # (no reply at all: maybe a dead leader; asking is cheap)
            status = last.get(i, (None, None))[1]
            if isinstance(status, dict) and stale_topology(status.get("error")):
                return True
        return False

    def retry_fates(
        self,
        tuples: list[Command],
        decoded: list[tuple[str | None, Any]],
        ask: list[int],
        out: list,
        resolved: dict[int, tuple[str, dict[str, Any] | None]],
        last: dict[int, tuple[str, dict[str, Any] | None]],
    ) -> list[int]:
        """``settle_fates`` from engine-shard ``OP_ORDER`` outcomes ``out`` of ``ask`` (the
        answers alone, without the account shard's; the clients use ``fate_steps``)."""
        fates = {i: self.fate_of(tuples[i], e, raw) for i, (e, raw) in zip(ask, out, strict=True)}
        return self.settle_fates(decoded, ask, fates, resolved, last)

    @staticmethod
    def settle_fates(
        decoded: list[tuple[str | None, Any]],
        ask: list[int],
        fates: Mapping[int, tuple[str, dict[str, Any] | None]],
        resolved: dict[int, tuple[str, dict[str, Any] | None]],
        last: dict[int, tuple[str, dict[str, Any] | None]],
    ) -> list[int]:
        """Take a retry round's fates of ``ask`` (from ``fate_steps``): an executed command is
        settled (its result becomes the order's state, no events, no error); the ones nobody
        has a record of are returned, to be sent again; an unknown one (a query unanswered, an
        order or amend still queued at or in flight from its account shard) is asked again
        next round. ``last``: each command's latest fate (for the results if time runs out)."""
        again = []
        for i in ask:
            fate, status = last[i] = fates[i]
            if fate == EXECUTED:
                resolved[i] = (EXECUTED, status)
                decoded[i] = (None, [])
            elif fate == NOT_EXECUTED:
                again.append(i)
        return again

    def retry_results(
        self,
        cmds: list[dict[str, Any]],
        tuples: list[Command],
        decoded: list,
        resolved: dict[int, tuple[str, dict[str, Any] | None]],
        attempts: list[int],
        last_fates: dict[int, tuple[str, dict[str, Any] | None]],
    ) -> list[Result]:
        """The results once the rounds ended: settled ones from their fate, the rest from
        their last attempt (an open one with the last fate answer, else ``unknown``)."""
        fates = dict(resolved)
        for i, (err, _) in enumerate(decoded):
            if i not in fates and uncertain(err):
                fates[i] = last_fates.get(i, (UNKNOWN, None))
        return self.results(cmds, decoded, fates, attempts)
    # -- fates of uncertain commands -----------------------------------------------------------

    @staticmethod
    def fate_targets(tuples: list[Command], decoded: list[tuple[str | None, Any]]) -> list[int]:
        """Indexes whose fate must be asked: uncertain errors on new/cancel/amend with an id."""
        return [i for i, (err, _) in enumerate(decoded) if uncertain(err) and askable(tuples[i])]

    def account_first(self, tuples: list[Command], idx: list[int]) -> list[int]:
        """The commands whose fate the account shard must answer first (the account tier is
        on): ``new`` and ``amend`` go through it (it holds, then forwards them), so one still
        queued there would look "not executed" at the engine shard and run later — and be sent
        again by ``Retry``. Cancels go straight to the engine shard: it alone answers."""
        if not self.accounts:
            return []
        return [i for i in idx if tuples[i][CMD_OP] in (OP_NEW, OP_AMEND)]

    @staticmethod
    def held_fate(cmd: Command, error: Any, raw: Any) -> tuple[str, dict[str, Any] | None] | None:
        """The fate from the account shard's ``OP_ORDER`` answer, or None when the engine
        shard must decide. The query travels the same router link as the command, behind it,
        so an answer means the account shard has taken (held and forwarded) or refused it.

        No answer → unknown (it may still be queued there). ``new``: ``held`` → executed (its
        engine state follows); ``not_held`` → None (never taken, or ended and settled: the
        engine shard tells). ``amend``: ``held`` with amends in flight (``pending`` > 0, from
        shards that report it) → unknown (forwarded, maybe not yet at the engine shard: asked
        again); otherwise None — the account shard forwarded it before it answered, and the
        engine shard reads its account link before client requests, so its state shows it."""
        if error is not None:
            return UNKNOWN, {"error": _kept(error)}
        refusal = result_error(raw) if isinstance(raw, Mapping) else None
        if type(refusal) is ErrorText:  # refused (e.g. not_allowed): its code kept
            return UNKNOWN, {"error": _kept(refusal)}
        if not isinstance(raw, Mapping) or raw.get("state") not in ("held", "not_held"):
            return UNKNOWN, {"error": _malformed("no state", "account shard: ")}
        if raw["state"] != "held":
            return None
        if cmd[CMD_OP] == OP_AMEND:
            pending = raw.get("pending")
            if _is_int(pending) and pending > 0:
                return UNKNOWN, {"state": "held", "pending": pending, "seq": raw.get("seq")}
            return None
        return EXECUTED, {"state": "held", "seq": raw.get("seq")}

    def fate_steps(self, tuples: list[Command], idx: list[int]) -> FateSteps:
        """The fate questions for commands ``idx`` as a dialogue both clients run with their
        own I/O (``_ask_fates``), so the decision lives once: yields ``(queries, via
        accounts)``, is sent their ``store`` outcomes, returns ``(fates, refused)`` — index →
        (fate, status), and the indexes whose query a batch error refused (e.g. overloaded:
        worth asking again). With the account tier, new/amend ask its shard first
        (``held_fate``); the rest, and those it leaves open, ask the engine shard."""
        fates: dict[int, tuple[str, dict[str, Any] | None]] = {}
        refused: list[int] = []
        first = self.account_first(tuples, idx)
        if first:
            out = yield [self.fate_query(tuples[i]) for i in first], True
            for i, (error, raw) in zip(first, out, strict=True):
                fate = self.held_fate(tuples[i], error, raw)
                if fate is not None:
                    fates[i] = fate
                    if error is not None and not uncertain(error):
                        refused.append(i)
        rest = [i for i in idx if i not in fates]
        if rest:
            out = yield [self.fate_query(tuples[i]) for i in rest], False
            for i, (error, raw) in zip(rest, out, strict=True):
                fates[i] = self.fate_of(tuples[i], error, raw)
                if error is not None and not uncertain(error):
                    refused.append(i)
        return fates, refused

    @staticmethod
    def fate_query(cmd: Command) -> Command:
        """The ``OP_ORDER`` read asking for ``cmd``'s order: (op, symbol, account, id)."""
        return (OP_ORDER, cmd[CMD_SYMBOL], cmd[CMD_ACCOUNT], cmd[CMD_ID])

    def fate_of(self, cmd: Command, error: Any, raw: Any) -> tuple[str, dict[str, Any] | None]:
        """(fate, Decimal status map) of ``cmd`` from its ``OP_ORDER`` outcome; ``error``
        (timeout, unreachable, batch error, malformed) leaves it unknown."""
        if error is not None:
            return UNKNOWN, {"error": _kept(error)}
        try:
            status = self.order_status_map(raw)
        except ShardexError as exc:
            return UNKNOWN, {"error": exc.error if exc.error is not None else str(exc)}
        return fate_from_state(cmd, raw), status

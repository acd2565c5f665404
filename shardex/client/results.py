"""What a command's outcome looks like to the caller (``Result``, its fate) and the pieces both
clients and ``shardex loadgen`` share to get there: the retry policy, the fate of a command read
from its order's state, and a deposit/withdraw answer turned into a ``Result``."""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from shardex.amounts import plain
from shardex.client.errors import _MAX_REASON, _kept, _malformed
from shardex.engine.codes import OP_AMEND, OP_CANCEL, OP_NEW, Command
from shardex.wire.errors import ErrorText
from shardex.wire.layouts import AMEND_PRICE, AMEND_QTY, CMD_OP
from shardex.wire.protocol import (
    STATE_CANCELLED,
    STATE_FILLED,
    STATE_LIVE,
    STATE_PENDING,
    STATE_UNKNOWN,
)

EXECUTED, NOT_EXECUTED, UNKNOWN = "executed", "not executed", "unknown"
Fate = tuple[str, dict[str, Any] | None]  # (executed / not executed / unknown, status)
# ``ClientCore.fate_steps``: yields (queries, via account shards), is sent their outcomes,
# returns (index → fate, indexes whose query a batch error refused)
FateSteps = Generator[tuple[list[Command], bool], list, tuple[dict[int, Fate], list[int]]]
_MAX_INT = 1 << 63
_REEXPORTED = (_MAX_REASON,)  # (its home is ``errors``; importable from here as before)


@dataclass(frozen=True)
class Retry:
    """The SDK's retry policy for writes whose outcome is open or that a non-leader refused
    (see the module docstring): bounded by ``deadline`` seconds after the first attempt, with
    a pause between rounds that starts at ``backoff`` and doubles up to ``max_backoff`` (a
    failover takes ~1–1.5 s: a round every ~0.3 s past the first ones)."""

    deadline: float = 10.0
    backoff: float = 0.05
    max_backoff: float = 0.3

    def __post_init__(self) -> None:
        if not (self.deadline >= 0 and self.backoff > 0 and self.max_backoff >= self.backoff):
            raise ValueError("Retry: deadline >= 0 and 0 < backoff <= max_backoff")


DEFAULT_RETRY: Retry | None = None  # ``Client(retry=...)`` default: one attempt, as before


@dataclass
class Result:
    """What happened to one command: its events (Decimal amounts) or a batch-level error, and
    its ``fate`` (executed / not executed / unknown; see the module docstring)."""

    command: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # overloaded / shard unavailable / timeout / malformed ...
    fate: str | None = None
    status: dict[str, Any] | None = None  # the order's state, when the fate had to be asked
    attempts: int = 1  # sends of this command (> 1: retried, see ``Retry``)

    @property
    def rejected(self) -> bool:
        return self.error is not None or any(e["ev"] == "rejected" for e in self.events)

    @property
    def ok(self) -> bool:
        return not self.rejected

    @property
    def reason(self) -> str | None:
        if self.error is not None:
            return self.error
        for e in self.events:
            if e["ev"] == "rejected":
                return e["reason"]
        return None

    @property
    def code(self) -> str | None:
        """The stable code (``shardex.wire.codes``) when the command was rejected: the engine's
        (``off_grid``, ``duplicate_id``, …), or the batch error's (``not_leader``,
        ``overloaded``, ``timeout``, …); None otherwise. Match on this, not on ``reason``'s
        wording."""
        if self.error is not None:
            return self.error.name if type(self.error) is ErrorText else None
        for e in self.events:
            if e["ev"] == "rejected":
                return e.get("code")
        return None

    @property
    def trades(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["ev"] == "trade"]

    @property
    def filled(self) -> Decimal:
        return sum((e["qty"] for e in self.trades), Decimal(0))


def _money(value: Any, name: str) -> str:
    if isinstance(value, float):
        raise TypeError(f"{name}: use Decimal or str for money and size, never float")
    if isinstance(value, Decimal | int):
        return plain(value)  # never "1E+2": the edge takes plain decimals only
    if isinstance(value, str):
        return value
    raise TypeError(f"{name}: expected Decimal, str or int, got {type(value).__name__}")

def _is_int(v: Any) -> bool:
    return type(v) is int and 0 <= v < _MAX_INT


def fate_from_state(cmd: Command, status: Mapping[str, Any]) -> str:
    """The fate of ``cmd`` (engine tuple) from its order's raw ``OP_ORDER`` answer.

    new: live/filled/cancelled → executed, unknown → not executed. cancel: the order cancelled
    by the user → executed, else not executed (live, filled first, or never there). amend: live
    with the asked qty and price → executed, else not executed. Anything unreadable → unknown.
    """
    state = status.get("state") if isinstance(status, Mapping) else None
    if state not in (STATE_LIVE, STATE_PENDING, STATE_FILLED, STATE_CANCELLED, STATE_UNKNOWN):
        return UNKNOWN
    op = cmd[CMD_OP]
    if op == OP_NEW:
        return NOT_EXECUTED if state == STATE_UNKNOWN else EXECUTED
    if op == OP_CANCEL:
        return (
            EXECUTED
            if state == STATE_CANCELLED and status.get("reason") == "user"
            else (NOT_EXECUTED)
        )
    if op == OP_AMEND:
        if state != STATE_LIVE:
            return NOT_EXECUTED
        qty, price = cmd[AMEND_QTY], cmd[AMEND_PRICE]
        qty_ok = qty is None or status.get("qty") == qty
        price_ok = price is None or status.get("price") == price
        return EXECUTED if qty_ok and price_ok else NOT_EXECUTED
    return UNKNOWN


def transfer_result(command: dict[str, Any], error: Any, results: Any) -> Result:
    """An account shard's answer to a deposit/withdraw → a ``Result`` whose one event is
    ``balance`` (available/held after it, Decimals) or ``rejected`` (reason, code)."""
    if error is not None:
        return Result(command, [], _kept(error), NOT_EXECUTED)
    res = results[0] if isinstance(results, tuple | list) and len(results) == 1 else None
    if not isinstance(res, dict):
        return Result(command, [], _malformed("expected a map"), UNKNOWN)
    if "rejected" in res:
        ev = {"ev": "rejected", "reason": str(res["rejected"]), "code": res.get("code")}
        return Result(command, [ev], None, EXECUTED)
    try:
        ev = {"ev": "balance", "asset": res["asset"], "available": Decimal(res["available"]),
              "held": Decimal(res["held"]), "repeated": bool(res.get("repeated"))}  # fmt: skip
    except (KeyError, TypeError, ValueError, ArithmeticError):
        return Result(command, [], _malformed("bad balance"), UNKNOWN)
    return Result(command, [ev], None, EXECUTED)


@dataclass
class CancelAll:
    """The answer to ``Client.cancel_all``: one ``Result`` per pair asked."""

    results: list[Result]

    @property
    def cancelled(self) -> list[tuple[str, str]]:
        """(symbol, id) of every order cancelled, in event order."""
        return [(e["symbol"], e["id"]) for r in self.results for e in r.events
                if e["ev"] == "cancelled"]  # fmt: skip

    @property
    def count(self) -> int:
        return len(self.cancelled)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

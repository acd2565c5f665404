"""Pure decoders of a shard's answers to the bridge (status polls, repairs): whatever the
shard sends, they return what the bridge needs or raise ``Malformed``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from shardex.engine import Market
from shardex.timemarks import check_runs
from shardex.wire import codes
from shardex.wire.errors import code_of, result_error
from shardex.wire.layouts import EV_SEQ
from shardex.wire.protocol import not_leader_epoch
from shardex.wire.pub import MAX_SEQ, Malformed, check_events


def not_leader(error: Any) -> bool:
    """True if a shard's error says it does not lead its shard (a standby, or a fenced leader):
    nothing ran, not garbage, not a stall; the leader is elsewhere and the bridge follows it.
    The one place the bridge decides "follow the leader" from an answer."""
    return not_leader_epoch(error) is not None


def denied(error: Any) -> bool:
    """True if a shard's error says our key may not do this (not a fault of the data): by its
    code only (a batch error, or a read refusal of an engine or account shard); its text is
    for the log."""
    return code_of(error) in (codes.UNKNOWN_KEY, codes.NOT_ALLOWED)


def _result(error: Any, results: Any) -> dict:
    if error is not None:
        raise Malformed(f"shard answered with an error: {str(error)[:100]}")
    if type(results) is not tuple or len(results) != 1 or not isinstance(results[0], dict):
        raise Malformed("expected one result map")
    return results[0]


def parse_status(error: Any, results: Any) -> int:
    """``decode_reply`` of an ``OP_STATUS`` request → the shard's seq, or ``Malformed``."""
    res = _result(error, results)
    seq = res.get("seq")
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise Malformed(f"status seq {str(seq)[:20]!r} is not a seq")
    return seq


def parse_events_reply(
    error: Any,
    results: Any,
    first: int,
    last: int,
    markets: Mapping[str, Market],
    check: Callable[[Any], tuple[list[tuple], int]] | None = None,
) -> tuple[list[tuple] | None, str | None, int | None, int]:
    """``decode_reply`` of ``(OP_EVENTS, first, last)`` → (events, gone reason, shard seq, bad).

    ``events`` holds the well-formed events whose seq lies in ``first..last``; ``gone`` is the
    shard's reason when it cannot re-send the range (then ``events`` is None); ``shard seq`` is
    what the shard says it has (None if it did not say); ``bad`` counts dropped garbage.
    """
    res = _result(error, results)
    seq = res.get("seq")
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        seq = None
    if "error" in res:
        return None, result_error(res), seq, 0
    if check is None:
        good, bad = check_events(res.get("events"), markets)
    else:  # an account shard's events (``check_account_events`` with its asset table)
        good, bad = check(res.get("events"))
    inside = [ev for ev in good if first <= ev[EV_SEQ] <= last]
    return inside, None, seq, bad + len(good) - len(inside)


def events_reply_times(results: Any) -> list[list[int]] | None:
    """The time marks of an ``OP_EVENTS`` answer (``[[seq, ts], ...]``, checked), None when
    the shard sent none (older than exchange time) or garbage."""
    res = results[0] if type(results) in (list, tuple) and len(results) == 1 else None
    return check_runs(res.get("ts")) if isinstance(res, dict) else None

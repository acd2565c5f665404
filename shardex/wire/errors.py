"""Errors as ``(code, text, data)``: how a batch-level error crosses the wire, and the only
place that says what a caller may do with one (retry, ask its fate, follow the leader).

A reply's error slot holds ``[code, text, data]``: ``code`` a number of the one code table
(``shardex.wire.codes``), ``text`` for humans (its wording may change any day), ``data`` a
small map of the values the text mentions (``not_leader``: the refusing process's ``epoch``).
In memory it is an ``ErrorText``: the text itself (a ``str``, so everything that prints, logs or
counts errors keeps working) carrying its ``code`` and ``data``. Every decision reads the code:
``uncertain``, ``retryable``, ``refresh``, ``unsent`` and ``not_leader_epoch`` never look at the
text, so rewording an error can never change a retry or a failover.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shardex.wire import codes

QUOTE_LEN = 64  # bytes of client input a reject reason may quote


def quote(value: Any) -> str:
    """A bounded, printable rendering of client input for a reject reason: ≤ QUOTE_LEN bytes,
    because it is ASCII (non-ASCII input is escaped, so 64 chars can never be 256 bytes)."""
    if isinstance(value, str | bytes):
        text = ascii(value[: QUOTE_LEN + 1])
    elif value is None or isinstance(value, int | float):
        try:
            text = repr(value)
        except ValueError:  # an int too long to print (CPython's int→str limit)
            text = "a huge int"
    else:
        text = type(value).__name__
    return text if len(text) <= QUOTE_LEN else text[: QUOTE_LEN - 3] + "..."



MAX_TEXT = 200  # chars of a peer's error text kept (a hostile peer may send megabytes)
MAX_DATA_ITEMS = 16  # entries per map or array of ``data``; deeper than two levels is dropped
_INT_RANGE = (-(1 << 63), 1 << 64)  # what msgpack can carry


class ErrorText(str):
    """A batch-level error: its text (this ``str``), its ``code`` (a number of
    ``shardex.wire.codes``) and ``data`` (the values the text mentions, a plain map)."""

    code: int
    data: dict[str, Any]

    def __new__(cls, code: int, text: str, data: Mapping[str, Any] | None = None) -> ErrorText:
        self = super().__new__(cls, text)
        self.code = code
        self.data = clean_data(data) if data else {}
        return self

    @property
    def name(self) -> str:
        """The code's public name (``not_leader``, ``timeout``...)."""
        return codes.name_of(self.code)

    def cut(self, limit: int) -> ErrorText:
        """The same error with its text cut to ``limit`` chars (slicing a ``str`` would lose
        the code)."""
        return self if len(self) <= limit else ErrorText(self.code, self[:limit], self.data)

    def prefixed(self, prefix: str) -> ErrorText:
        """The same error with ``prefix`` before its text (e.g. which read it answered)."""
        return ErrorText(self.code, prefix + self, self.data)

    def __reduce__(self) -> tuple[Any, ...]:  # pickling (loadgen's worker processes)
        return (ErrorText, (self.code, str(self), self.data))


def error(code: int, text: str, /, **data: Any) -> ErrorText:
    """An error of ``code`` with ``text`` for humans and ``data`` for programs."""
    return ErrorText(code, text, data)


def clean_data(value: Any, depth: int = 0) -> Any:
    """``data`` bounded and made of plain msgpack values: maps with str keys, arrays, str,
    int, float, bool, None; at most ``MAX_DATA_ITEMS`` per level, two levels deep."""
    t = type(value)
    if value is None or t is bool or t is float:
        return value
    if t is int:
        return value if _INT_RANGE[0] <= value < _INT_RANGE[1] else None
    if t is str:
        return value[:MAX_TEXT]
    if depth > 2:
        return None
    if isinstance(value, Mapping):
        items = [(k, v) for k, v in list(value.items())[:MAX_DATA_ITEMS] if type(k) is str]
        return {k[:64]: clean_data(v, depth + 1) for k, v in items}
    if t in (list, tuple):
        return [clean_data(v, depth + 1) for v in value[:MAX_DATA_ITEMS]]
    return None


def encode_error(err: ErrorText) -> tuple[int, str, dict[str, Any]]:
    """An error → its wire form ``(code, text, data)``. A plain ``str`` is refused: every
    error a process sends must say what it is (``TypeError``, a bug of the sender)."""
    if type(err) is not ErrorText:
        raise TypeError(f"a batch error needs a code (an ErrorText), got {type(err).__name__}")
    return (err.code, str(err), err.data)


def decode_error(raw: Any) -> ErrorText:
    """A reply's error slot → ``ErrorText``; never raises. A slot that is not a
    ``[code, text, data]`` of a known code (an older or newer peer, garbage) becomes
    ``malformed_reply``: its fate is open, as for any reply this side cannot read."""
    if type(raw) is tuple and len(raw) == 3:
        number, text, data = raw
        if type(number) is int and type(text) is str:
            if number in codes.TABLE:
                return ErrorText(number, text[:MAX_TEXT], data if isinstance(data, dict) else None)
            return error(codes.MALFORMED_REPLY, f"malformed reply: unknown error code {number}: "
                         f"{text[:MAX_TEXT - 50]}", code=number)  # fmt: skip
    if type(raw) is str:
        return error(codes.MALFORMED_REPLY, f"malformed reply: error without a code: "
                     f"{raw[:MAX_TEXT - 40]}")  # fmt: skip
    return error(codes.MALFORMED_REPLY, f"malformed reply: error of type {type(raw).__name__}")


# -- the batch errors of the cluster's processes ----------------------------------------------

# The texts are for humans and may change; the code says what an error is. The ``ERR_*``
# strings are the texts' starts, kept for logs and tests (nothing decides by them);
# ``ERR_OVERLOADED``, ``ERR_UNAVAILABLE``, ``ERR_UNKNOWN_KEY`` are whole errors.
ERR_JOURNAL = "journal unavailable"  # the journal cannot write (code journal_unavailable)
ERR_OVERLOADED = error(codes.OVERLOADED, "overloaded")
ERR_UNAVAILABLE = error(codes.UNAVAILABLE, "shard unavailable")
# The router's answer for a shard that is replaying its journal after a restart (nothing ran;
# send it again later): "recovering: shard 0 is replaying its journal (…, ~4 s left)".
ERR_RECOVERING = "recovering"
# The batch error of a request holding a command only the cluster itself creates (see
# ``internal_op_refusal``): nothing of that request ran, was journaled or published.
ERR_INTERNAL_OP = "internal op"
ERR_NOT_LEADER = "not leader"  # a standby or fenced leader (see ``not_leader_error``)
ERR_UNKNOWN_KEY = error(codes.UNKNOWN_KEY, "authentication failed: unknown key")
ERR_MALFORMED_MESSAGE = error(
    codes.MALFORMED_REQUEST, "malformed message: expected [routing key, request id, payload]")


def not_leader_error(epoch: int, why: str, routed: bool = False) -> ErrorText:
    """The batch error of a request that reached a process not leading its shard (nothing
    ran: safe to send again to the leader); ``epoch`` in data. ``routed``: it came through a
    router (the router re-points when the new leader registers)."""
    text = f"{ERR_NOT_LEADER} (epoch {epoch}): {why}"[:180]
    if routed:
        text = f"{ERR_UNAVAILABLE}: {text}"
    return error(codes.NOT_LEADER, text, epoch=epoch, routed=routed)


def leader_changed_error(age: float, shard: int, epoch: int) -> ErrorText:
    """The router's answer to a request that was in flight to a leader deposed by ``epoch``
    (it will never answer): the request may have run, ask its fate before sending it again."""
    return error(
        codes.LEADER_CHANGED,
        f"timeout after {age:.1f}s at the router: shard {shard} changed leader (epoch {epoch}) "
        "while the request was in flight; it may have run: ask its fate",
        age=round(age, 3), shard=shard, epoch=epoch,
    )  # fmt: skip


def journal_error(why: str) -> ErrorText:
    """The batch error of a write while the journal cannot write (nothing of it ran)."""
    return error(codes.JOURNAL_UNAVAILABLE, f"{ERR_JOURNAL}: {why}", why=why)


def internal_error(exc: BaseException) -> ErrorText:
    """The batch error of a request a shard failed on (a bug): what ran before stays run."""
    name = type(exc).__name__
    return error(codes.INTERNAL_ERROR, f"internal error ({name}); see shard log", error=name)


def halted_error(why: str) -> ErrorText:
    """An account shard's answer to new orders and amends while halted (integrity alarm)."""
    return error(codes.HALTED, f"halted: {why}", why=why)


def too_many_reads_error(reads: int, audits: int, most: int) -> ErrorText:
    """The answer to a request with more reads (or audits) than a shard serves at once."""
    return error(codes.TOO_MANY_READS, f"too many reads in one request ({reads}, {audits} "
                 f"audits): at most {most}, and one audit", reads=reads, audits=audits,
                 max=most)  # fmt: skip


def recovering_error(slot: str, estimate: Any, text: str) -> ErrorText:
    """The router's answer for ``slot`` while it replays its journal (``text``: its
    estimate, described); nothing ran: send it again later."""
    return error(codes.RECOVERING, f"{ERR_RECOVERING}: {slot} is {text}", slot=slot,
                 estimate=estimate)  # fmt: skip


# -- a read's refusal: the error inside one result map ---------------------------------------


def read_error(code: int, text: str, /, **data: Any) -> dict[str, Any]:
    """A read's refusal (a bad argument, a key that may not read it, the wrong shard) as its
    result map ``{"error": (code, text, data)}``: one command of a batch is refused, not the
    batch, yet it crosses the wire as a batch error does, so a client decides on the code."""
    return {"error": encode_error(error(code, text, **data))}


def bad_events_read() -> dict[str, Any]:
    """The refusal of an events read (the bridge's repair) whose range is not a range."""
    return read_error(codes.MALFORMED,
                      "events: expected (op, first seq, last seq) with 0 < first <= last")


def events_gone(first: int, last: int, why: str) -> dict[str, Any]:
    """The answer to an events read of a range the shard no longer holds (its ring and its
    journal were trimmed past it): ``events_gone``, final; the bridge counts them lost."""
    return read_error(codes.EVENTS_GONE, why, first=first, last=last)


def result_error(res: Mapping[str, Any]) -> ErrorText | None:
    """The refusal a read's result map carries, as an ``ErrorText`` (the coded form of
    ``read_error``, or one already decoded); anything else in the slot (an older peer's bare
    text, garbage) reads as ``malformed_reply`` keeping the text, as a batch error's slot does.
    None when the map holds no error. Never raises."""
    raw = res.get("error")
    if raw is None:
        return None
    if type(raw) is ErrorText:
        return raw.cut(MAX_TEXT)
    return decode_error(raw)


# -- decisions: by code only ----------------------------------------------------------------


def code_of(err: Any) -> int | None:
    """The code an error carries; None for None and for anything without one."""
    return err.code if type(err) is ErrorText else None


def _row(err: Any) -> codes.Code | None:
    return codes.TABLE.get(err.code) if type(err) is ErrorText else None


def uncertain(err: Any) -> bool:
    """The error leaves the command's fate open (it may have run): ask its fate."""
    row = _row(err)
    return row is not None and row.uncertain


def retryable(err: Any) -> bool:
    """``Retry`` may send the command again (asking its fate first when it is uncertain)."""
    row = _row(err)
    return row is not None and row.retryable


def refresh(err: Any) -> bool:
    """A direct client should ask a router for the topology again (it reached a process that
    does not lead, or nothing)."""
    row = _row(err)
    return row is not None and row.refresh


def unsent(err: Any) -> bool:
    """The request never left this client: send it again at once, no fate to ask."""
    row = _row(err)
    return row is not None and row.unsent


def not_leader_epoch(err: Any) -> int | None:
    """The epoch a ``not_leader`` error carries (the refusing process's), or None when ``err``
    is not one (then there is no leader to follow from it)."""
    if code_of(err) != codes.NOT_LEADER:
        return None
    epoch = err.data.get("epoch")
    return epoch if type(epoch) is int and epoch >= 0 else None

"""The client's errors and how it classifies a failed command (the one place that decides).

``uncertain`` (the command may have run: ask its fate), ``retryable`` (``Retry`` may send it
again after asking), ``stale_topology`` (a direct client should ask the router where the leader
is now) and ``not_leader_epoch`` (the refusing process's epoch) are used by both clients, by
``ClientCore``'s fate and retry steps and by ``shardex loadgen``: change a rule here and every
one of them follows. They read the error's code (``shardex.wire.codes``, carried by an
``ErrorText``), never its text: rewording an error cannot change a decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shardex.wire import codes
from shardex.wire import errors as wire_errors
from shardex.wire.errors import ErrorText, not_leader_epoch

TIMEOUT_PREFIX = "timeout after"  # local error text: no reply in time (fate must be asked)
MALFORMED_PREFIX = "malformed reply"  # local error text: a reply we cannot read (fate: ask)
UNREACHABLE_PREFIX = "cannot reach"  # local error text: the request could not even be sent
_MAX_REASON = 300  # characters of a peer's error string kept (a hostile peer may send MBs)

__all__ = [
    "MALFORMED_PREFIX",
    "TIMEOUT_PREFIX",
    "UNREACHABLE_PREFIX",
    "AuthenticationFailed",
    "RequestTimeout",
    "ShardexError",
    "not_leader_epoch",
    "retryable",
    "stale_topology",
    "uncertain",
]


class ShardexError(Exception):
    """Base class of client errors (connection, timeout, bad reply). ``error``: the coded
    error behind it when there is one, and ``code`` its public name (``shardex.wire.codes``:
    ``timeout``, ``unreachable``, ``overloaded``...); match on that, not on the message."""

    def __init__(
        self, message: str = "", code: int | None = None, data: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.error: ErrorText | None = None if code is None else ErrorText(code, message, data)

    @property
    def code(self) -> str | None:
        return None if self.error is None else self.error.name


class RequestTimeout(ShardexError):
    """No reply within the client's timeout (shard or router down, or overloaded); code
    ``timeout``, or ``unreachable`` when the request could not even be sent."""

    def __init__(
        self, message: str = "", code: int = codes.TIMEOUT, data: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message, code, data)


class AuthenticationFailed(ShardexError):
    """The cluster refused this client's key (unknown, revoked, or another cluster's), or the
    client and the cluster disagree on security (a secure cluster and no key, or the reverse)."""


# The decisions read the error's code (``shardex.wire.codes``), never its text.


def uncertain(error: str | None) -> bool:
    """True when an error leaves the command's fate open (it may have run): ask the shard."""
    return wire_errors.uncertain(error)


def retryable(error: str | None) -> bool:
    """True when ``Retry`` may send the command again (after asking its fate): its outcome is
    open, or a router or non-leader refused it during a failover, or it could not be sent."""
    return wire_errors.retryable(error)


def stale_topology(error: str | None) -> bool:
    """True when a direct client should ask the router for the topology again: the process it
    reached does not lead (a standby, a fenced leader) or nothing answers there."""
    return wire_errors.refresh(error)


def unsent(error: str | None) -> bool:
    """True when the request never left this client: send it again at once, no fate to ask."""
    return wire_errors.unsent(error)


def timeout_error(seconds: float) -> ErrorText:
    """The client's own error for a request with no reply in ``seconds`` (its fate is open)."""
    return ErrorText(codes.TIMEOUT, f"{TIMEOUT_PREFIX} {seconds}s", {"after": seconds})


def _malformed(detail: str, what: str = "") -> ErrorText:
    """The client's own error for a reply it cannot read (its fate is open)."""
    return ErrorText(codes.MALFORMED_REPLY, f"{what}{MALFORMED_PREFIX}: {detail}")


def _kept(error: Any) -> Any:
    """A peer's error, cut to ``_MAX_REASON`` chars, its code kept."""
    if type(error) is ErrorText:
        return error.cut(_MAX_REASON)
    return str(error)[:_MAX_REASON]


def _bad_reply(text: str) -> ShardexError:
    """The exception for a read whose reply this client cannot read."""
    return ShardexError(text, codes.MALFORMED_REPLY)


def _failed(what: str, error: Any) -> ShardexError:
    """The exception for a read answered with a batch error (its code kept)."""
    text = f"{what}: {str(error)[:_MAX_REASON]}"
    if type(error) is ErrorText:
        return ShardexError(text, error.code, error.data)
    return ShardexError(text)

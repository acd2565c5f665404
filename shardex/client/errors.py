"""The client's errors and how it classifies a failed command (the one place that decides).

``uncertain`` (the command may have run: ask its fate), ``retryable`` (``Retry`` may send it
again after asking), ``stale_topology`` (a direct client should ask the router where the leader
is now) and ``not_leader_epoch`` (the refusing process's epoch) are used by both clients, by
``ClientCore``'s fate and retry steps and by ``shardex loadgen``: change a rule here and every
one of them follows.
"""

from __future__ import annotations

from shardex.wire.protocol import ERR_NOT_LEADER, ERR_RECOVERING, ERR_UNAVAILABLE, not_leader_epoch

TIMEOUT_PREFIX = "timeout after"  # local error: no reply in time (fate must be asked)
MALFORMED_PREFIX = "malformed reply"  # local error: a reply we cannot read (fate must be asked)
UNREACHABLE_PREFIX = "cannot reach"  # local error: the request could not even be sent

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
    """Base class of client errors (connection, timeout, bad reply)."""


class RequestTimeout(ShardexError):
    """No reply within the client's timeout (shard or router down, or overloaded)."""


class AuthenticationFailed(ShardexError):
    """The cluster refused this client's key (unknown, revoked, or another cluster's), or the
    client and the cluster disagree on security (a secure cluster and no key, or the reverse)."""


def uncertain(error: str | None) -> bool:
    """True when an error leaves the command's fate open (it may have run): ask the shard."""
    return error is not None and (
        error.startswith(TIMEOUT_PREFIX) or error.startswith(MALFORMED_PREFIX)
    )


def retryable(error: str | None) -> bool:
    """True when ``Retry`` may send the command again (after asking its fate): its outcome is
    open, or a router or non-leader refused it during a failover, or it could not be sent."""
    return error is not None and (
        uncertain(error)
        or error.startswith(ERR_UNAVAILABLE)
        or error.startswith(ERR_RECOVERING)
        or error.startswith(ERR_NOT_LEADER)
        or error.startswith(UNREACHABLE_PREFIX)
    )


def stale_topology(error: str | None) -> bool:
    """True when a direct client should ask the router for the topology again: the process it
    reached does not lead (a standby, a fenced leader) or nothing answers there."""
    return error is not None and (
        not_leader_epoch(error) is not None or error.startswith(UNREACHABLE_PREFIX)
    )

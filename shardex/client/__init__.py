"""Python SDK: ``Client`` (blocking) and ``AsyncClient`` (asyncio) with the same API.

Money goes in and out as ``Decimal`` (or decimal strings); the client converts to integer
ticks/lots with the market table (the same one the shards use), so shards only see integers.
``submit_many`` batches commands per shard and keeps a window of batches in flight, which is
what makes the cluster fast: one ZeroMQ round trip per batch instead of per order.

``direct=True`` asks the router once for the topology, then talks straight to each shard's own
endpoint with the same ``shard_for`` hash, skipping the router hop.

Markets: ``markets=`` takes a mapping or the path of a markets TOML file. Without it the client
learns the cluster's own table on connect (first request): from the router's topology, else by
asking a shard (``OP_MARKETS``), and uses the built-in defaults only when the cluster does not
say. So a market defined with ``shardex up --markets FILE`` just works in the client.

Identity: ``key=`` is a key file path (or ``KeyFile``) from ``shardex keys add``; without it the
client uses ``$SHARDEX_KEY``, else the local cluster's admin key (``./data/keys/admin.key``, made
by ``shardex up``), else no key (an ``--insecure`` cluster); ``key=False`` forces no key. The
cluster acts only for the accounts the key holds: a one-account trader key makes that account
the default. A key the cluster refuses raises ``AuthenticationFailed`` (a ``ShardexError``).

Every ``Result`` says what happened to its command (``Result.fate``):

* ``"executed"``: the shard ran it (its events are in ``Result.events``; a reject is executed too,
  ``Result.ok`` tells the outcome);
* ``"not executed"``: it never ran (``overloaded``, ``shard unavailable``, ``journal unavailable``,
  cannot connect, or the shard says it has no record of the order);
* ``"unknown"``: only when the shard itself could not be asked.

When a command gets no reply within ``timeout`` the client does not guess: it asks the owning
shard for the order (``OP_ORDER``: live / filled / cancelled / unknown) before returning, and puts
the answer, Decimal-converted, in ``Result.status``. ``order_status(symbol, id)`` asks the same
question directly. For a cancel or amend the fate is read from the order's state (cancelled by
the user / live with the asked qty and price), since the shard keeps fates per order.
With the account tier on, a ``new`` or ``amend`` (which go through the account's shard: it
holds, then forwards) asks that account shard first, on every path (``Retry`` too): no answer →
``unknown`` (it may still be queued there, and run); a held ``new`` → executed; else the
engine shard decides as above (``ClientCore.fate_steps``, shared by both clients).

Retrying safely: a shard refuses a ``new`` whose id is live or finished within its recent-results
window as a duplicate. So after a timeout, either look at ``Result.fate`` (``"not executed"``:
send it again) or simply send the *same* command with the *same id* again: it can never be
placed twice within the window; a duplicate reject means the first one ran (ask
``order_status`` for its fills). Never retry with a new id unless the fate is ``"not executed"``.

Automatic retries (``retry=Retry()``, for failover): a write whose outcome is open or that
a non-leader refused (timeout, unreadable reply, ``not leader``, ``shard unavailable``, cannot
reach) is retried within ``Retry.deadline`` so that it never runs twice: its order's fate is
asked first (``OP_ORDER``) and the command is sent again, with the same id, only when the
shard has no record of it (``unknown``; a cancel or amend: when the order does not show it
yet); a retried ``new`` refused as ``duplicate_id`` ran in an earlier attempt, and its fate is
asked. A command resolved from its fate has no events (``Result.status`` has the order's state,
fills and trades) and ``Result.attempts`` > 1. A direct client (``direct=True``; with or
without ``retry``) asks the router for the topology again after ``not leader`` or cannot
reach, so it (or its next call) follows the new leader's endpoint. Past the deadline (a round
started before it finishes: its fate query and re-send, each bounded by ``timeout``) the last
error is returned with its fate (never a guess). Not retried: ``overloaded`` (load
shedding), ``journal unavailable``, reads, ``submit_raw``. ``retry=None`` (the default)
keeps one attempt per command, as before.

The package: ``errors`` (the errors and the one classification of a failed command),
``results`` (``Result``, ``Retry``, fates), ``core`` (``ClientCore``: routing and plan, with
``replies``, ``fatesteps`` and ``topology``), ``_async/client.py`` (the client logic, written
once), ``_sync/client.py`` (generated from it: ``python scripts/unasync_client.py``) and the
per-flavour I/O in ``_async/io.py`` and ``_sync/io.py``. See docs/client.md.
"""

from __future__ import annotations

from shardex.client._async.client import AsyncClient
from shardex.client._sync.client import Client
from shardex.client.audit import audit_report
from shardex.client.core import DEFAULT_ENDPOINT, ClientCore, KeyArg, _load
from shardex.client.errors import (
    MALFORMED_PREFIX,
    TIMEOUT_PREFIX,
    UNREACHABLE_PREFIX,
    AuthenticationFailed,
    RequestTimeout,
    ShardexError,
    not_leader_epoch,
    retryable,
    stale_topology,
    uncertain,
)
from shardex.client.heartbeat import CancelOnDisconnect
from shardex.client.replies import _EVENT_SHAPES, _Malformed
from shardex.client.results import (
    _MAX_REASON,
    DEFAULT_RETRY,
    EXECUTED,
    NOT_EXECUTED,
    UNKNOWN,
    Fate,
    FateSteps,
    Result,
    Retry,
    _is_int,
    _money,
    fate_from_state,
    transfer_result,
)
from shardex.client.topology import MARKETS_RETRY_S

__all__ = [
    "EXECUTED",
    "NOT_EXECUTED",
    "UNKNOWN",
    "AsyncClient",
    "AuthenticationFailed",
    "CancelOnDisconnect",
    "Client",
    "ClientCore",
    "RequestTimeout",
    "Result",
    "Retry",
    "ShardexError",
    "fate_from_state",
]
# (also importable from here, as before the package: the names below, used by tools and tests)
_REEXPORTED = (
    DEFAULT_ENDPOINT, DEFAULT_RETRY, MALFORMED_PREFIX, MARKETS_RETRY_S, TIMEOUT_PREFIX,
    UNREACHABLE_PREFIX, _EVENT_SHAPES, _MAX_REASON, Fate, FateSteps, KeyArg, _Malformed, _is_int,
    _load, _money, audit_report, not_leader_epoch, retryable, stale_topology, transfer_result,
    uncertain,
)  # fmt: skip

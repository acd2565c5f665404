"""Accounts and money: the account shard's pure state machine (no I/O, no clock, no sockets).

``AccountCore`` holds balances and holds for the accounts of one account shard; the engine
shard's ``SettlementFeed`` turns its events into sequenced settlements for the account shards.
The design, the wire messages it needs and what is not wired yet: docs/accounts.md.
The ledger, holds, transfers and link modules also come as a mypyc build (``shardex.compiled``,
with the engine's); ``implementation()`` says which runs.
"""

from shardex import compiled as _compiled

_IMPL = _compiled.activate("accounts", __path__)  # noqa: F821 - a package's __path__


def implementation() -> str:
    """``"compiled"`` (the mypyc build of the account core) or ``"interpreted"``."""
    return _IMPL


from shardex.accounts.assets import DEFAULT_FEE, AssetTable, Fee  # noqa: E402 - after the build is chosen
from shardex.accounts.codes import *  # noqa: E402,F403 - the codes are this package's vocabulary
from shardex.accounts.core import AccountCore, account_shard_for, required  # noqa: E402
from shardex.accounts.feed import SettlementFeed  # noqa: E402

__all__ = [
    "DEFAULT_FEE",
    "AccountCore",
    "AssetTable",
    "Fee",
    "SettlementFeed",
    "account_shard_for",
    "implementation",
    "required",
]

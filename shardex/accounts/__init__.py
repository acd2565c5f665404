"""Accounts and money: the account shard's pure state machine (no I/O, no clock, no sockets).

``AccountCore`` holds balances and holds for the accounts of one account shard; the engine
shard's ``SettlementFeed`` turns its events into sequenced settlements for the account shards.
The design, the wire messages it needs and what is not wired yet: docs/accounts.md.
"""

from shardex.accounts.assets import DEFAULT_FEE, AssetTable, Fee
from shardex.accounts.codes import *  # noqa: F403 - the codes are this package's vocabulary
from shardex.accounts.core import AccountCore, account_shard_for, required
from shardex.accounts.feed import SettlementFeed

__all__ = [
    "DEFAULT_FEE",
    "AccountCore",
    "AssetTable",
    "Fee",
    "SettlementFeed",
    "account_shard_for",
    "required",
]

"""The fee schedule the fee-tier tests run with: a ``base`` tier and an ``mm`` tier whose maker
rate is a rebate (the markets file's ``[fees]`` table, docs/accounts.md)."""

FEES = """
[fees.tiers.base]
maker = 2
taker = 5
[fees.tiers.mm]
maker = -3
taker = 4
"""

"""The private REST routes about money: balances, fills, and (admin keys) deposits and
withdrawals. Amounts leave as decimal strings; transfers take them as decimal strings."""

from __future__ import annotations

from aiohttp import web

from shardex.accounts.ledger import account_shard_for
from shardex.amounts import plain
from shardex.gateway.fills import CURSOR
from shardex.gateway.rest_common import (
    NO_ACCOUNT_TIER_TEXT,
    Call,
    Refusal,
    amount,
    integer,
    need_admin,
    reply,
    result,
    text,
)
from shardex.wire.codes import GATEWAY_UNAVAILABLE, INVALID, NO_ACCOUNT_TIER

MAX_FILLS = 500  # fills of one page


async def balances(call: Call) -> web.Response:
    """``GET /v1/balances``: each asset's free (available) and held amount."""
    account = call.account(call.params("account").get("account"))
    got = await call.client.balance(account)
    out = {a: {"free": plain(free), "held": plain(held)} for a, (free, held) in got.items()}
    return reply({"account": account, "balances": out})


async def positions(call: Call) -> web.Response:
    """``GET /v1/positions``: the account's perp positions, one per pair (every engine shard's
    read, ``AsyncClient.positions``): size, entry, cost, PnL, collateral, funding and, once the
    pair has a mark, the margins at it. Decimal strings as the engine shard wrote them."""
    account = call.account(call.params("account").get("account"))
    return reply({"account": account, "positions": await call.client.positions(account)})


async def fills(call: Call) -> web.Response:
    """``GET /v1/fills[?symbol=S&limit=N&after=CURSOR]``: the account's fills, newest first,
    with their fees (``shardex.gateway.fills`` says where they come from and why)."""
    q = call.params("symbol", "limit", "after", "account")
    symbol = text(q, "symbol", required=False)
    limit = integer(q.get("limit"), "limit", 1, MAX_FILLS, default=100)
    after = q.get("after")
    if after is not None and not CURSOR.fullmatch(after):
        raise Refusal(INVALID, "after must be the next cursor of a previous page")
    account = call.account(q.get("account"))
    if call.fills is None:
        raise Refusal(GATEWAY_UNAVAILABLE, "this gateway reads no Redis: no fills", 503)
    await call.client.topology()
    shards = call.client.accounts
    if not shards:
        raise Refusal(NO_ACCOUNT_TIER, f"the cluster runs {NO_ACCOUNT_TIER_TEXT}", 501)
    rows, nxt = await call.fills.page(account_shard_for(account, shards), account, symbol,
                                      limit, after)  # fmt: skip
    return reply({"account": account, "fills": rows, "next": nxt})


async def _transfer(call: Call, what: str) -> web.Response:
    need_admin(call.rec)
    obj = call.obj()
    account, asset = text(obj, "account"), text(obj, "asset")
    money, ref = amount(obj, "amount"), text(obj, "ref", required=False)
    send = call.client.deposit if what == "deposit" else call.client.withdraw
    return result(await send(account, asset, money, ref=ref))


async def deposit(call: Call) -> web.Response:
    """``POST /v1/deposit {account, asset, amount[, ref]}`` (admin key): ``ref`` makes it
    idempotent (the same ref again changes nothing)."""
    return await _transfer(call, "deposit")


async def withdraw(call: Call) -> web.Response:
    """``POST /v1/withdraw {account, asset, amount[, ref]}`` (admin key)."""
    return await _transfer(call, "withdraw")

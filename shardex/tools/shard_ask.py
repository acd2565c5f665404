"""One admin command or read to one engine shard, for the mover (``shardex.tools.mover``)."""

from __future__ import annotations

from typing import Any

from shardex.client import AsyncClient, ShardexError


class MoveError(Exception):
    """The move cannot go on as asked (nothing was changed by the step that raised it)."""


async def ask(client: AsyncClient, shard: int, cmd: tuple) -> Any:
    """One admin command or read on engine shard ``shard`` (through the router's ``#i``
    route, or the direct socket): its result; ``MoveError`` on a refusal."""
    await client._ready(markets=False)  # (the SDK's own connection set-up and request path)
    return await _ask(client, client._sock(shard), f"#{shard}", f"shard {shard}", cmd)


async def ask_account(client: AsyncClient, shard: int, cmd: tuple) -> Any:
    """One admin command on account shard ``shard`` (through the router's ``%j`` route): its
    result; ``MoveError`` on a refusal."""
    await client._ready(markets=False)
    return await _ask(client, client._router, f"%{shard}", f"account shard {shard}", cmd)


async def _ask(client: AsyncClient, sock: Any, route: str, what: str, cmd: tuple) -> Any:
    """``cmd`` on ``route`` through ``sock``: its one result; ``MoveError`` on a refusal."""
    try:
        error, results = await client._request(sock, route.encode(), cmd, what)
    except ShardexError as exc:
        raise MoveError(f"{what}: {exc}") from None
    if error is not None or not isinstance(results, list | tuple) or len(results) != 1:
        raise MoveError(f"{what}: {error or 'unexpected reply'}")
    (res,) = results
    if isinstance(res, dict) and "error" in res:
        raise MoveError(f"{what}: {res['error']}")
    return res

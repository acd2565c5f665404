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
    what = f"shard {shard}"
    try:
        error, results = await client._request(client._sock(shard), f"#{shard}".encode(), cmd,
                                               what)  # fmt: skip
    except ShardexError as exc:
        raise MoveError(f"{what}: {exc}") from None
    if error is not None or not isinstance(results, list | tuple) or len(results) != 1:
        raise MoveError(f"{what}: {error or 'unexpected reply'}")
    (res,) = results
    if isinstance(res, dict) and "error" in res:
        raise MoveError(f"{what}: {res['error']}")
    return res


async def ask_account(client: AsyncClient, shard: int, cmd: tuple) -> Any:
    """One admin command on account shard ``shard`` (through the router's ``%j`` route): its
    result; ``MoveError`` on a refusal."""
    await client._ready(markets=False)
    what = f"account shard {shard}"
    try:
        error, results = await client._request(client._router, f"%{shard}".encode(), cmd, what)
    except ShardexError as exc:
        raise MoveError(f"{what}: {exc}") from None
    if error is not None or not isinstance(results, list | tuple) or len(results) != 1:
        raise MoveError(f"{what}: {error or 'unexpected reply'}")
    (res,) = results
    if isinstance(res, dict) and "error" in res:
        raise MoveError(f"{what}: {res['error']}")
    return res

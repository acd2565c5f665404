"""The gateway's private REST API: signed requests (``signing``), sent to the cluster with the
CURVE key the API key is bound to (``apikeys``), one ``AsyncClient`` per API key in use.

The routes are registered from the OpenAPI description (``openapi.PATHS``: each operation's
``operationId`` names its handler in ``rest_orders`` or ``rest_account``). Every handler gets an
authenticated ``Call``: a signed request's key, or the key a browser session's middleware put
in ``request["shardex_key"]`` (then no signature is asked). Whatever a handler refuses or the
cluster cannot answer is a JSON error with a stable code, never an exception out of aiohttp.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from shardex.client import AsyncClient, ShardexError
from shardex.gateway import rest_account, rest_orders
from shardex.gateway.apikeys import ApiKeyRecord
from shardex.gateway.fills import FillReader
from shardex.gateway.openapi import operations, spec
from shardex.gateway.rest_common import Auth, Call, Refusal, cluster_error, refuse
from shardex.wire.codes import GATEWAY_UNAVAILABLE, INVALID

Handler = Callable[[Call], Awaitable[web.Response]]
HANDLERS: dict[str, Handler] = {
    "place": rest_orders.place, "amend": rest_orders.amend, "cancel": rest_orders.cancel,
    "status": rest_orders.status, "cancel_all": rest_orders.cancel_all,
    "open_orders": rest_orders.open_orders, "cancel_after": rest_orders.cancel_after,
    "balances": rest_account.balances, "fills": rest_account.fills,
    "positions": rest_account.positions,
    "deposit": rest_account.deposit, "withdraw": rest_account.withdraw,
}  # fmt: skip


class Rest:
    """The signed routes, one ``AsyncClient`` per API key in use. ``redis``: an asyncio Redis
    client (``decode_responses``) the fills are read from (None: no fills route data)."""

    def __init__(self, endpoint: str, keys_dir: str | None, markets: Any,
                 client: Callable[..., Any] = AsyncClient, redis: Any = None) -> None:  # fmt: skip
        self.endpoint, self.keys_dir, self.markets = endpoint, keys_dir, markets
        self.auth = Auth(keys_dir)
        self.clients: dict[str, Any] = {}
        self.make_client = client
        self.fills = FillReader(redis) if redis is not None else None
        self.openapi = json.dumps(spec())

    @property
    def records(self) -> dict[str, ApiKeyRecord]:
        return self.auth.records

    def routes(self, app: web.Application) -> None:
        for method, path, op_id in operations():
            handler = self.serve_openapi if op_id == "openapi" else self.route(HANDLERS[op_id])
            app.router.add_route(method, path, handler)

    async def serve_openapi(self, request: web.Request) -> web.Response:  # noqa: ARG002
        return web.Response(text=self.openapi, content_type="application/json")

    def client_for(self, rec: ApiKeyRecord) -> Any:
        """The key's ``AsyncClient`` (made on first use, kept: one ZeroMQ identity per key).
        It learns the markets from the cluster, as any SDK client not given a table: so it
        asks again for a pair listed since (a copy of the gateway's table would not)."""
        c = self.clients.get(rec.key.key_id)
        if c is None:
            c = self.clients[rec.key.key_id] = self.make_client(
                self.endpoint, key=rec.key_file, timeout=5.0)
        return c

    def route(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        """``handler`` behind the authentication, with every refusal made a JSON error."""

        async def serve(request: web.Request) -> web.Response:
            try:
                rec, body = await self.auth.check(request)
                call = Call(rec, body, request.query, self.client_for(rec), self.fills)
                return await handler(call)
            except Refusal as exc:
                return exc.response()
            except ShardexError as exc:
                return cluster_error(exc)
            except (RedisError, OSError) as exc:  # the fills' Redis away (OSError: timeouts too)
                return refuse(GATEWAY_UNAVAILABLE, f"Redis does not answer: {exc}"[:200], 503)
            except (ValueError, TypeError, ArithmeticError) as exc:  # the SDK's own checks
                return refuse(INVALID, str(exc)[:200], 400)

        return serve

    async def close(self) -> None:
        for c in self.clients.values():
            await c.close()

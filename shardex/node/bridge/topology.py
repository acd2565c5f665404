"""The cluster's shape as the router tells it: every engine and account shard's PUB and direct
endpoints and leader epoch (``fetch_topology`` asks until every shard has registered; the
parsers are pure and total)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio

from shardex.auth import KeyFile
from shardex.net.roles import router_requests
from shardex.node.bridge.links import Watches
from shardex.recovery import describe as describe_recovery
from shardex.wire.protocol import decode_reply
from shardex.wire.transport import (
    RequestIds,
    TopologyError,
    parse_topology,
    split_endpoints,
    topology_frames,
)

log = logging.getLogger("shardex.bridge")

Endpoints = list[dict[str, Any]]


async def fetch_topology(
    ctx: zmq.asyncio.Context,
    router: str,
    key: KeyFile | None,
    watches: Watches,
    running: Callable[[], bool],
    learn: Callable[[list[Any]], None] | None = None,
) -> tuple[Endpoints, Endpoints]:
    """(engine shards, account shards) as the router sees them, once every one of them has
    registered; ``([], [])`` if the bridge stops meanwhile (``running()`` turns False). Only
    returned, never stored here: the caller decides which endpoints it moves to (storing the
    account shards' endpoints on every engine-shard follow made a later account-shard follow
    see "no change" while its sockets still pointed at the old leader). ``learn`` gets the
    engine shards' market tables (their HELLOs': pairs listed at runtime included)."""
    sock = router_requests(ctx, zmq, key)
    routers = split_endpoints(router)  # several routers: any of them answers
    watch = watches.watch(sock, {ep: ("router", "the router") for ep in routers})
    for ep in routers:
        sock.connect(ep)
    try:
        return await _ask(sock, router, running, learn)
    finally:
        await watches.drop(watch)
        sock.close(0)


async def _ask(
    sock: zmq.asyncio.Socket, router: str, running: Callable[[], bool],
    learn: Callable[[list[Any]], None] | None,
) -> tuple[Endpoints, Endpoints]:  # fmt: skip
    ids = RequestIds()
    said: tuple[str, ...] | None = None  # what the last wait line named (said once)
    while running():
        await sock.send_multipart(topology_frames(ids.next()))
        missing: tuple[str, ...] = ("an answer from the router",)
        detail = ""
        if await sock.poll(2000):
            frames = await sock.recv_multipart()
            topo = _topology(frames)
            accounts = _account_topology(frames)
            if topo is not None and accounts is not None:
                if said is not None:
                    log.info("every shard registered with the router %s", router)
                if learn is not None:
                    learn(_market_tables(frames))
                return topo, accounts
            missing, detail = _waiting_for(frames)
        if missing != said:  # once per change of what it waits for, not per poll
            said = missing
            log.info("waiting for %s to register with the router %s%s",
                     ", ".join(missing), router, detail)  # fmt: skip
        await asyncio.sleep(0.5)
    return [], []


def _account_topology(frames: list[bytes]) -> list[dict[str, Any]] | None:
    """The router's account shards → each one's PUB and direct endpoints and leader
    epoch (0: not replicated); ``[]`` when the account tier is off, None until every account
    shard has registered."""
    try:
        _, payload = frames  # [request id, payload]
        info = parse_topology(*decode_reply(payload))
    except (TopologyError, Exception):
        return None
    topo = info.get("account_topology") or []
    if not isinstance(topo, list | tuple) or len(topo) != (info.get("accounts") or 0):
        return None
    out = []
    for t in topo:
        if not isinstance(t, dict):
            return None
        pub, direct = t.get("pub"), t.get("direct")
        if type(pub) is not str or type(direct) is not str or not pub or not direct:
            return None
        epoch = t.get("epoch")  # a replicated account shard's leader epoch
        out.append({"pub": pub, "direct": direct, "epoch": epoch if type(epoch) is int else 0})
    return out


def _waiting_for(frames: list[bytes]) -> tuple[tuple[str, ...], str]:
    """From a router's topology reply: the shards not registered yet (names) and, for those
    replaying their journal, the router's recovering estimate (text)."""
    try:
        _, payload = frames  # [request id, payload]
        info = parse_topology(*decode_reply(payload))
    except Exception:
        return ("a valid topology from the router",), ""
    names = [f"shard {i}" for i, t in enumerate(info.get("topology") or ())
             if not (isinstance(t, dict) and t.get("pub") and t.get("direct"))]  # fmt: skip
    names += [f"account shard {j}" for j, t in enumerate(info.get("account_topology") or ())
              if not (isinstance(t, dict) and t.get("pub") and t.get("direct"))]  # fmt: skip
    recovering = info.get("recovering")
    detail = ""
    if isinstance(recovering, dict) and recovering:
        detail = " (recovering: " + "; ".join(describe_recovery(v) for v in
                                              recovering.values()) + ")"  # fmt: skip
    return tuple(names) or ("every shard",), detail


def _market_tables(frames: list[bytes]) -> list[Any]:
    """Each engine shard's market table in a topology reply ([] when unreadable)."""
    try:
        topo = parse_topology(*decode_reply(frames[-1]))["topology"]
        return [t.get("markets") for t in topo]
    except TopologyError:
        return []


def _topology(frames: list[bytes]) -> list[dict[str, Any]] | None:
    """The router's topology reply → every shard's endpoints, or None if incomplete/garbage."""
    if len(frames) != 2:
        return None
    try:
        _, payload = frames  # [request id, payload]
        topo = parse_topology(*decode_reply(payload))["topology"]
        out = []
        for t in topo:
            pub, direct = t.get("pub"), t.get("direct")
            if type(pub) is not str or type(direct) is not str or not pub or not direct:
                return None
            epoch = t.get("epoch")  # a replicated shard's leader epoch, else None
            out.append({"pub": pub, "direct": direct, "epoch": epoch if type(epoch) is int else 0})
        return out
    except TopologyError:
        return None

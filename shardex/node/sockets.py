"""The socket roles of a sequenced node, each declared once (options, CURVE, HWMs): the DEALER
to a router, the PUB of its events, the direct client port, and both ends of the engine ⇄
account link. ``key`` is the process's own CURVE key pair (a client role), ``server`` the
cluster's server key pair (a server role); None for both: ``--insecure`` (a lab), where a
link names itself with ``IDENTITY`` instead."""

from __future__ import annotations

from typing import Any

from shardex.auth import (
    DOMAIN_ACCOUNT_LINK,
    DOMAIN_CLIENTS,
    DOMAIN_EVENTS,
    client_socket,
    server_socket,
)

HEARTBEAT_IVL_MS = 500  # links ping their peer this often ...
HEARTBEAT_TIMEOUT_MS = 1500  # ... and drop a connection that stayed silent this long


def _heartbeat(sock: Any, zmq: Any) -> None:
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)


def router_link(ctx: Any, zmq: Any, endpoint: str, identity: str, key: Any) -> Any:
    """A DEALER to one router (one per router: a reply must go back through the router that
    forwarded its request, and each router keeps its own in-flight caps). Inbound is bounded
    by the router's in-flight cap per shard; past this RCVHWM the router's send fails and it
    answers ``overloaded`` itself. Outbound replies get a pipe larger than that cap, plus the
    node's outbox beyond it. Secure: the router learns the link from the signed HELLO."""
    d = ctx.socket(zmq.DEALER)
    if key is None:
        d.setsockopt(zmq.IDENTITY, identity.encode())
    d.setsockopt(zmq.LINGER, 0)
    _heartbeat(d, zmq)
    d.setsockopt(zmq.RCVHWM, 20_000)
    d.setsockopt(zmq.SNDHWM, 50_000)
    if key is not None:
        client_socket(d, key)  # the router knows this key as shard ``index`` of its tier
    d.connect(endpoint)
    return d


def pub_socket(ctx: Any, zmq: Any, endpoint: str, hwm: int, server: Any) -> Any:
    """The PUB of a node's events: never blocks (past ``hwm`` a message is dropped and the
    subscriber repairs the gap by seq); secure: subscribers need a key too."""
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, hwm)
    pub.setsockopt(zmq.LINGER, 0)
    if server is not None:
        server_socket(pub, server, DOMAIN_EVENTS)
    pub.bind(endpoint)
    return pub


def direct_port(ctx: Any, zmq: Any, endpoint: str, server: Any, *, sndhwm: int, rcvhwm: int,
                max_msg: int, mandatory: bool) -> Any:  # fmt: skip
    """The ROUTER direct clients (and the bridge) connect to. ``mandatory``: a full or gone
    peer raises instead of a silent drop (the engine shard then keeps the reply in its
    outbox); past ``max_msg`` bytes libzmq drops the connection instead of buffering."""
    r = ctx.socket(zmq.ROUTER)
    r.setsockopt(zmq.LINGER, 0)
    if mandatory:
        r.setsockopt(zmq.ROUTER_MANDATORY, 1)
    r.setsockopt(zmq.SNDHWM, sndhwm)
    r.setsockopt(zmq.RCVHWM, rcvhwm)
    r.setsockopt(zmq.MAXMSGSIZE, max_msg)
    if server is not None:
        server_socket(r, server, DOMAIN_CLIENTS)
    r.bind(endpoint)
    return r


def account_link_server(ctx: Any, zmq: Any, endpoint: str, server: Any) -> Any:
    """The engine shard's end of the account link (a ROUTER the account shards connect to).

    Insecure: account shard J connects as IDENTITY ``accounts-J`` and a restarted one takes
    its id over (``ROUTER_HANDOVER``). Secure: never — a peer names its own IDENTITY before
    any message can be key-checked, so handover gave account shard J's pipe to any valid
    account-link key that said ``accounts-J``. There the routing id is libzmq's own (account
    shards set none) and is learned from a key-checked message; a reconnect is a new id,
    learned from its SYNC."""
    a = ctx.socket(zmq.ROUTER)
    a.setsockopt(zmq.LINGER, 0)
    a.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a gone account shard: counted, re-sent later
    if server is None:
        a.setsockopt(zmq.ROUTER_HANDOVER, 1)
    a.setsockopt(zmq.SNDHWM, 100_000)
    a.setsockopt(zmq.RCVHWM, 100_000)
    if server is not None:
        server_socket(a, server, DOMAIN_ACCOUNT_LINK)
    a.bind(endpoint)
    return a


def engine_link(ctx: Any, zmq: Any, replicas: list[str], identity: str, key: Any) -> Any:
    """The account shard's end of its link to one engine shard (a DEALER to each of its
    replicas' link endpoints). Secure: the engine shard learns our (libzmq) id from our key.

    A replicated engine shard (``ep0+ep1``): only its leader has bound its link endpoint, so
    with IMMEDIATE a message goes only to a connection that completed its handshake, i.e. to
    the leader; a dead or paused (deposed) one is dropped by the heartbeat within
    HEARTBEAT_TIMEOUT. What went to a deposed leader meanwhile is never applied (it is past
    its lease deadline) and the new leader's HAVE makes us re-send it: the link is sequenced
    and idempotent. (One endpoint: no IMMEDIATE, messages wait for the connection.)"""
    d = ctx.socket(zmq.DEALER)
    if key is None:
        d.setsockopt(zmq.IDENTITY, identity.encode())
    d.setsockopt(zmq.LINGER, 0)
    d.setsockopt(zmq.SNDHWM, 100_000)
    d.setsockopt(zmq.RCVHWM, 100_000)
    _heartbeat(d, zmq)
    if len(replicas) > 1:
        d.setsockopt(zmq.IMMEDIATE, 1)
    if key is not None:
        client_socket(d, key)
    for endpoint in replicas:
        d.connect(endpoint)
    return d

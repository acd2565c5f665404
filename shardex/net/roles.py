"""Every socket role of the cluster's processes, each declared once (type, options, CURVE,
HWMs), so an option is chosen (and explained) in one place:

* a sequenced node's: the DEALER to each router (``router_link``), the PUB of its events
  (``pub_socket``), its direct client port (``direct_port``), both ends of the engine ⇄
  account link (``account_link_server``, ``engine_link``);
* the router's front (clients) and back (shards) ROUTERs (``router_front``, ``router_back``);
* replication: the leader's ROUTER (``replication_server``), a standby's DEALER to it
  (``replication_follower``) and the port a standby answers ``not_leader`` on
  (``standby_front``); a recovering node's beacon (``recovery_beacon``);
* subscribers and the bridge's requests: ``event_sub`` (the bridge, loadgen's fill counter),
  ``shard_requests`` (a DEALER to one shard's direct port), ``router_requests`` (to routers).

``key`` is the process's own CURVE key pair (a client role), ``server`` the cluster's server
key pair (a server role); None for both: ``--insecure`` (a lab), where a link names itself with
``IDENTITY`` instead. ``ctx`` and ``zmq`` come from the process's transport (``shardex.net``),
so the same roles run on the in-memory twin. (The SDK's DEALER is ``wire.transport.dealer``;
the ZAP handler's socket is ``auth.ZapHandler``'s.)"""

from __future__ import annotations

from typing import Any

from shardex.auth import (
    DOMAIN_ACCOUNT_LINK,
    DOMAIN_CLIENTS,
    DOMAIN_EVENTS,
    DOMAIN_SHARDS,
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


def router_front(ctx: Any, zmq: Any, endpoint: str, server: Any, client_hwm: int) -> Any:
    """The router's client-facing ROUTER. A full or gone client raises (counted, never
    silent); ``client_hwm`` bounds what a client that never reads holds here; past RCVHWM
    libzmq stops reading that connection (TCP backpressure to the client) instead of growing
    the router (a 3× flood from 32 connections grew it by 238 MB with 10,000)."""
    front = ctx.socket(zmq.ROUTER)
    front.setsockopt(zmq.LINGER, 0)
    front.setsockopt(zmq.ROUTER_MANDATORY, 1)
    front.setsockopt(zmq.SNDHWM, client_hwm)
    front.setsockopt(zmq.RCVHWM, 1_000)
    front.setsockopt(zmq.MAXMSGSIZE, 64 << 20)
    if server is not None:
        server_socket(front, server, DOMAIN_CLIENTS)
    front.bind(endpoint)
    return front


def router_back(ctx: Any, zmq: Any, endpoint: str, server: Any, hwm: int) -> Any:
    """The router's shard-facing ROUTER: an unknown shard is EHOSTUNREACH, not a silent drop;
    a restarted shard takes its identity over (insecure: its IDENTITY; secure: the router
    maps the key-checked HELLO to a slot); heartbeats drop a shard that went silent."""
    back = ctx.socket(zmq.ROUTER)
    back.setsockopt(zmq.LINGER, 0)
    back.setsockopt(zmq.ROUTER_MANDATORY, 1)
    back.setsockopt(zmq.ROUTER_HANDOVER, 1)
    back.setsockopt(zmq.SNDHWM, hwm)
    _heartbeat(back, zmq)
    if server is not None:
        server_socket(back, server, DOMAIN_SHARDS)
    back.bind(endpoint)
    return back


def replication_server(ctx: Any, zmq: Any, max_msg: int, server: Any, domain: str) -> Any:
    """A replicated leader's ROUTER its standbys connect to (bound by the caller, after its
    ZAP registry is in place). A restarted standby takes its id over; past ``max_msg`` bytes
    libzmq drops the connection instead of buffering a hostile frame. Secure: a CURVE server
    in the shard's own replication ``domain`` (only that shard's key is admitted)."""
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.MAXMSGSIZE, max_msg)
    if server is not None:
        server_socket(sock, server, domain)
    return sock


def replication_follower(ctx: Any, zmq: Any, node: str, key: Any) -> Any:
    """A standby's DEALER to its leader's replication endpoint (connected by the caller): it
    names itself ``node`` so the leader tracks it across reconnects; secure: the shard's key."""
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.IDENTITY, node.encode())
    if key is not None:
        client_socket(s, key)
    return s


def standby_front(ctx: Any, zmq: Any, endpoint: str, server: Any) -> Any:
    """The direct port a standby binds to answer ``not_leader`` until it leads (secure
    clients must complete a handshake to hear the refusal). Raises ``ZMQError`` if the port
    cannot be bound (the socket is closed first)."""
    front = ctx.socket(zmq.ROUTER)
    front.setsockopt(zmq.LINGER, 0)
    front.setsockopt(zmq.SNDHWM, 1000)
    try:
        if server is not None:
            server_socket(front, server, DOMAIN_CLIENTS)
        front.bind(endpoint)
    except zmq.ZMQError:
        front.close(0)
        raise
    return front


def recovery_beacon(ctx: Any, zmq: Any, endpoint: str, identity: bytes, key: Any) -> Any:
    """A recovering node's DEALER to one router, for its ``recovering`` HELLOs: a tiny SNDHWM
    (a router not reading just misses beats); insecure, it names itself ``identity``."""
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.setsockopt(zmq.SNDHWM, 4)
    if key is not None:
        client_socket(d, key)  # the router checks the key, as for the link's hello
    else:
        d.setsockopt(zmq.IDENTITY, identity)
    d.connect(endpoint)
    return d


def event_sub(ctx: Any, zmq: Any, hwm: int, key: Any) -> Any:
    """A subscriber to every event of the PUBs it will connect to (the bridge, loadgen's fill
    counter): a large RCVHWM (past it events are dropped and repaired by seq), no linger."""
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, hwm)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    if key is not None:
        client_socket(sub, key)
    return sub


def shard_requests(ctx: Any, zmq: Any, endpoint: str, key: Any) -> Any:
    """The bridge's DEALER to one shard's direct port (status polls, range repairs):
    IMMEDIATE, so nothing queues toward a shard that is not there."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IMMEDIATE, 1)
    if key is not None:
        client_socket(sock, key)
    sock.connect(endpoint)
    return sock


def router_requests(ctx: Any, zmq: Any, key: Any) -> Any:
    """A DEALER to the routers (connected by the caller to each: any of them answers), e.g.
    the bridge's topology request."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if key is not None:
        client_socket(sock, key)
    return sock

"""The router's decisions over a fake transport (no sockets): caps, rejects, hello, accounting."""

from __future__ import annotations

import msgpack

from shardex.node.router import TO_CLIENT, TO_SHARD, Router, RouterConfig
from shardex.wire.protocol import (
    ERR_OVERLOADED,
    ERR_UNAVAILABLE,
    OP_HELLO,
    decode_reply,
    encode_request,
    packb,
    shard_for,
)


def _router(**kw) -> Router:
    cfg = RouterConfig(2, "", "", **kw)
    return Router(2, cfg)


def _order_frames(client: bytes, req: bytes, symbol: str = "BTC-USD") -> list[bytes]:
    return [client, symbol.encode(), req, encode_request([(1, symbol, "o", "a")])]


def test_forwards_to_the_hashed_shard_and_tracks_until_the_reply():
    r = _router()
    dest, out = r.from_client(_order_frames(b"c1", b"r1"), 0.0)
    assert dest == TO_SHARD
    assert out[0] == f"shard-{shard_for('BTC-USD', 2)}".encode() and out[1:3] == [b"c1", b"r1"]
    r.sent(out, 1.0)
    s = shard_for("BTC-USD", 2)
    assert r.shard_inflight[s] == 1 and r.client_inflight == {b"c1": 1}
    reply = r.from_shard([out[0], b"c1", b"r1", b"payload"], 1.5)
    assert reply == [b"c1", b"r1", b"payload"]
    assert r.shard_inflight == [0, 0] and r.client_inflight == {} and r.shard_bytes == [0, 0]
    assert sum(r.ack_time[s].counts) == 1


def test_per_shard_inflight_cap_sheds_with_overloaded():
    r = _router(max_inflight=3, client_max_inflight=100)
    for k in range(3):
        dest, out = r.from_client(_order_frames(f"c{k}".encode(), b"r"), 0.0)
        assert dest == TO_SHARD
        r.sent(out, 0.0)
    dest, out = r.from_client(_order_frames(b"c9", b"r"), 0.0)
    assert dest == TO_CLIENT and decode_reply(out[2]) == (ERR_OVERLOADED, None)
    # the other shard is not affected by this one's queue
    other = next(
        s for s in ("ETH-USD", "SOL-USD", "XRP-USD") if shard_for(s, 2) != shard_for("BTC-USD", 2)
    )
    assert r.from_client(_order_frames(b"c9", b"r", other), 0.0)[0] == TO_SHARD


def test_per_client_cap_and_bytes_cap():
    r = _router(client_max_inflight=2)
    for k in range(2):
        r.sent(r.from_client(_order_frames(b"greedy", str(k).encode()), 0.0)[1], 0.0)
    assert r.from_client(_order_frames(b"greedy", b"x"), 0.0)[0] == TO_CLIENT
    assert r.from_client(_order_frames(b"polite", b"x"), 0.0)[0] == TO_SHARD
    rb = _router(max_inflight_bytes=100)
    big = [b"c", b"BTC-USD", b"r", b"x" * 101]
    assert rb.from_client(big, 0.0)[0] == TO_CLIENT


def test_reused_request_id_is_counted_once_and_expiry_frees_caps():
    r = _router()
    for _ in range(3):
        r.sent(r.from_client(_order_frames(b"c", b"same"), 0.0)[1], 0.0)
    assert sum(r.shard_inflight) == 1 and r.client_inflight == {b"c": 1}
    assert r.expire(100.0) == 1
    assert sum(r.shard_inflight) == 0 and r.client_inflight == {} and r.inflight == {}


def test_send_failures_become_counted_rejects():
    r = _router()
    _, out = r.from_client(_order_frames(b"c", b"r"), 0.0)
    rej = r.send_failed(out, unreachable=True)
    assert rej[:2] == [b"c", b"r"] and decode_reply(rej[2])[0] == ERR_UNAVAILABLE
    assert decode_reply(r.send_failed(out, unreachable=False)[2])[0] == ERR_OVERLOADED
    assert r.rejected[ERR_UNAVAILABLE] == 1 and r.rejected[ERR_OVERLOADED] == 1


def test_malformed_and_bad_keys_are_answered_not_forwarded():
    r = _router()
    dest, out = r.from_client([b"c", b"only two"], 0.0)
    assert dest == TO_CLIENT and "malformed" in decode_reply(out[2])[0]
    dest, out = r.from_client([b"c", b"#7", b"r", b""], 0.0)
    assert dest == TO_CLIENT and decode_reply(out[2])[0] == "unknown routing key"
    dest, out = r.from_client([b"c", b"BTC-USD", b"r", b"x" * (2 << 20)], 0.0)
    assert dest == TO_CLIENT and "too large" in decode_reply(out[2])[0]
    assert r.from_shard([b"shard-0", b"c"], 0.0) is None  # wrong frame count from a shard


def test_hello_registers_only_the_matching_identity_and_restart_frees_inflight():
    r = _router()
    hello = packb((OP_HELLO, {"shard": 1, "shards": 2, "pid": 10, "direct": "d", "pub": "p"}))
    r.from_shard([b"shard-0", b"", b"HELLO", hello], 0.0)  # claims shard 1 from shard-0
    assert 1 not in r.topology
    r.from_shard([b"shard-1", b"", b"HELLO", hello], 0.0)
    assert r.topology[1]["pid"] == 10
    sym = next(s for s in ("BTC-USD", "ETH-USD", "SOL-USD") if shard_for(s, 2) == 1)
    r.sent(r.from_client(_order_frames(b"c", b"r", sym), 0.0)[1], 0.0)
    assert r.shard_inflight[1] == 1
    restarted = packb((OP_HELLO, {"shard": 1, "shards": 2, "pid": 11}))
    r.from_shard([b"shard-1", b"", b"HELLO", restarted], 1.0)
    assert r.shard_inflight[1] == 0 and r.topology[1]["pid"] == 11
    for garbage in (b"", b"\xc1", msgpack.packb([OP_HELLO, [1, 2]]), msgpack.packb({"a": 1})):
        r.from_shard([b"shard-1", b"", b"HELLO", garbage], 2.0)  # never raises
    assert r.topology[1]["pid"] == 11


def test_secure_router_routes_only_to_the_link_that_signed_the_shards_hello(tmp_path):
    """Secure mode: a shard's traffic goes to the connection whose HELLO was signed by that
    shard's own key, never to a connection that merely names itself ``shard-i``."""
    from shardex.auth import KeyStore

    store = KeyStore(tmp_path / "keys")
    store.init()
    k0 = store.process_key("shard-0", "shard", 0)
    k1 = store.process_key("shard-1", "shard", 1)
    r = Router(2, RouterConfig(2, "", ""), store.registry())
    sym0 = next(s for s in ("BTC-USD", "ETH-USD", "SOL-USD") if shard_for(s, 2) == 0)
    admin = store.process_key("ops", "admin")
    # before any signed hello: nowhere to send it
    dest, out = r.from_client(_order_frames(b"c", b"r1", sym0), 0.0, admin.public)
    assert dest == TO_CLIENT and decode_reply(out[2])[0] == ERR_UNAVAILABLE
    hello0 = packb((OP_HELLO, {"shard": 0, "shards": 2, "pid": 1}))
    r.from_shard([b"rogue", b"", b"HELLO", hello0], 0.0, k1.public)  # shard 1's key claims 0
    r.from_shard([b"shard-0", b"", b"HELLO", hello0], 0.0, None)  # a bare name claims 0
    assert r.route_ids[0] is None and 0 not in r.topology
    r.from_shard([b"\x00link-a", b"", b"HELLO", hello0], 0.0, k0.public)
    dest, out = r.from_client(_order_frames(b"c", b"r1", sym0), 0.0, admin.public)
    assert dest == TO_SHARD and out[0] == b"\x00link-a" and out[3] == admin.public.encode()
    r.sent(out, 0.0)
    # a reply from any other connection is dropped, the request stays in flight
    assert r.from_shard([b"rogue", b"c", b"r1", b"forged"], 0.1) is None
    assert r.foreign_replies == 1 and r.shard_inflight[0] == 1
    assert r.from_shard([b"\x00link-a", b"c", b"r1", b"real"], 0.2) == [b"c", b"r1", b"real"]
    assert r.shard_inflight[0] == 0
    # an unknown key is refused before routing
    dest, out = r.from_client(_order_frames(b"c", b"r2", sym0), 0.0, "x" * 40)
    assert dest == TO_CLIENT and "authentication failed" in decode_reply(out[2])[0]

"""The router's decisions over a fake transport (no sockets): caps, rejects, hello, accounting,
and the batching of requests per shard (what goes on the wire is built here, the loop only
sends it)."""

from __future__ import annotations

import msgpack

from shardex.node.router import Router, RouterConfig
from shardex.wire.protocol import (
    BATCH,
    BATCH_REQUEST_WIDTH,
    ERR_OVERLOADED,
    ERR_UNAVAILABLE,
    MAX_BATCH,
    OP_HELLO,
    decode_batch,
    decode_reply,
    encode_batch,
    encode_request,
    packb,
    shard_for,
)

TO_CLIENT = -1


def _router(**kw) -> Router:
    cfg = RouterConfig(2, "", "", **kw)
    return Router(2, cfg)


def _order_frames(client: bytes, req: bytes, symbol: str = "BTC-USD") -> list[bytes]:
    return [client, symbol.encode(), req, encode_request([(1, symbol, "o", "a")])]


def _reply(shard_link: bytes, *triples: bytes) -> list[bytes]:
    """What a shard sends back for a batch: [link, "", BATCH, msgpack [client, req, reply, ...]]."""
    return [shard_link, b"", BATCH, encode_batch(list(triples))]


def _send(r: Router, frames: list[bytes], now: float = 0.0, user: str | None = None):
    """Admit one request and take its shard's batch at once (a wake-up with one request)."""
    shard, reply = r.from_client(frames, now, user)
    assert reply is None, decode_reply(reply[2])
    return r.take_batch(shard)


def test_forwards_to_the_hashed_shard_and_tracks_until_the_reply():
    r = _router()
    s = shard_for("BTC-USD", 2)
    shard, reply = r.from_client(_order_frames(b"c1", b"r1"), 0.0)
    assert (shard, reply) == (s, None)
    # admitted means counted against the caps at once, before the batch is sent
    assert r.shard_inflight[s] == 1 and r.client_inflight == {b"c1": 1}
    link, items = r.take_batch(s)
    assert link == f"shard-{s}".encode()
    assert items[:3] == [b"c1", b"r1", b""] and len(items) == BATCH_REQUEST_WIDTH
    assert r.take_batch(s)[1] == []  # taken once
    replies = r.from_shard(_reply(link, b"c1", b"r1", b"payload"), 1.5)
    assert replies == [[b"c1", b"r1", b"payload"]]
    assert r.shard_inflight == [0, 0] and r.client_inflight == {} and r.shard_bytes == [0, 0]
    assert sum(r.ack_time[s].counts) == 1 and r.forwarded[s] == 1


def test_one_wakeup_merges_each_shards_requests_and_splits_the_replies_in_order():
    """Interleaved single orders of many clients: one batch per shard, in arrival order; the
    shard's one reply message gives every client exactly its own reply."""
    r = _router(client_max_inflight=100)
    syms = {shard_for(s, 2): s for s in ("BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD")}
    assert len(syms) == 2
    sent = {0: [], 1: []}
    for k in range(30):
        shard = k % 2
        frames = _order_frames(f"c{k % 7}".encode(), f"r{k}".encode(), syms[shard])
        assert r.from_client(frames, 0.0) == (shard, None)
        sent[shard].append((frames[0], frames[2], frames[3]))
    assert sorted(r.ready) == [0, 1]
    for shard in (0, 1):
        link, items = r.take_batch(shard)
        wire = decode_batch(encode_batch(items), BATCH_REQUEST_WIDTH)
        got = [(wire[i], wire[i + 1], wire[i + 3]) for i in range(0, len(wire), 4)]
        assert got == sent[shard]
        triples = []
        for client, req, _ in reversed(got):  # the shard may answer in any order
            triples += [client, req, b"reply-" + req]
        replies = r.from_shard(_reply(link, *triples), 1.0)
        assert sorted(replies) == sorted([c, q, b"reply-" + q] for c, q, _ in got)
    assert r.inflight == {} and r.client_inflight == {} and r.forwarded == [15, 15]


def test_batch_is_full_at_its_request_cap():
    r = _router(max_inflight=10_000, client_max_inflight=10_000)
    s = shard_for("BTC-USD", 2)
    for k in range(MAX_BATCH - 1):
        r.from_client(_order_frames(b"c", str(k).encode()), 0.0)
        assert not r.batch_full(s)
    r.from_client(_order_frames(b"c", b"last"), 0.0)
    assert r.batch_full(s)
    assert len(r.take_batch(s)[1]) == MAX_BATCH * BATCH_REQUEST_WIDTH and not r.batch_full(s)


def test_per_shard_inflight_cap_sheds_with_overloaded():
    r = _router(max_inflight=3, client_max_inflight=100)
    for k in range(3):
        shard, reply = r.from_client(_order_frames(f"c{k}".encode(), b"r"), 0.0)
        assert reply is None
    # the cap counts requests still waiting in this wake-up's batch too
    shard, reply = r.from_client(_order_frames(b"c9", b"r"), 0.0)
    assert shard == TO_CLIENT and decode_reply(reply[2]) == (ERR_OVERLOADED, None)
    # the other shard is not affected by this one's queue
    other = next(
        s for s in ("ETH-USD", "SOL-USD", "XRP-USD") if shard_for(s, 2) != shard_for("BTC-USD", 2)
    )
    assert r.from_client(_order_frames(b"c9", b"r", other), 0.0)[1] is None


def test_per_client_cap_and_bytes_cap():
    r = _router(client_max_inflight=2)
    for k in range(2):
        _send(r, _order_frames(b"greedy", str(k).encode()))
    assert r.from_client(_order_frames(b"greedy", b"x"), 0.0)[0] == TO_CLIENT
    assert r.from_client(_order_frames(b"polite", b"x"), 0.0)[1] is None
    rb = _router(max_inflight_bytes=100)
    big = [b"c", b"BTC-USD", b"r", b"x" * 101]
    assert rb.from_client(big, 0.0)[0] == TO_CLIENT


def test_reused_request_id_is_counted_once_and_expiry_frees_caps():
    r = _router()
    for _ in range(3):
        _send(r, _order_frames(b"c", b"same"))
    assert sum(r.shard_inflight) == 1 and r.client_inflight == {b"c": 1}
    assert r.expire(100.0) == 1
    assert sum(r.shard_inflight) == 0 and r.client_inflight == {} and r.inflight == {}


def test_send_failures_become_counted_rejects_and_free_the_caps():
    r = _router()
    s = shard_for("BTC-USD", 2)
    r.from_client(_order_frames(b"c", b"r"), 0.0)
    r.from_client(_order_frames(b"d", b"q"), 0.0)
    _, items = r.take_batch(s)
    rej = r.batch_failed(s, items, unreachable=True)
    assert [x[:2] for x in rej] == [[b"c", b"r"], [b"d", b"q"]]
    assert all(decode_reply(x[2])[0] == ERR_UNAVAILABLE for x in rej)
    assert r.inflight == {} and r.shard_inflight == [0, 0] and r.forwarded == [0, 0]
    r.from_client(_order_frames(b"c", b"r2"), 0.0)
    _, items = r.take_batch(s)
    assert decode_reply(r.batch_failed(s, items, unreachable=False)[0][2])[0] == ERR_OVERLOADED
    assert r.rejected[ERR_UNAVAILABLE] == 2 and r.rejected[ERR_OVERLOADED] == 1


def test_malformed_and_bad_keys_are_answered_not_forwarded():
    r = _router()
    dest, out = r.from_client([b"c", b"only two"], 0.0)
    assert dest == TO_CLIENT and "malformed" in decode_reply(out[2])[0]
    dest, out = r.from_client([b"c", b"#7", b"r", b""], 0.0)
    assert dest == TO_CLIENT and decode_reply(out[2])[0] == "unknown routing key"
    dest, out = r.from_client([b"c", b"BTC-USD", b"r", b"x" * (2 << 20)], 0.0)
    assert dest == TO_CLIENT and "too large" in decode_reply(out[2])[0]
    assert r.ready == [] and r.inflight == {}


def test_malformed_messages_from_a_shard_are_counted_and_never_raise():
    r = _router()
    _send(r, _order_frames(b"c", b"r"))
    bad = [
        [b"shard-0", b"c"],  # wrong frame count
        [b"shard-0", b"c", b"r", b"unbatched"],  # the old one-reply form
        [b"shard-0", b"", BATCH, b"\xc1"],
        [b"shard-0", b"", BATCH, packb([b"c", b"r"])],  # not a multiple of 3
        [b"shard-0", b"", BATCH, packb([b"c", b"r", 7])],  # not bytes
        [b"shard-0", b"", BATCH, packb([])],
        [b"shard-0", b"", b"X", encode_batch([b"c", b"r", b"x"])],
    ]
    for frames in bad:
        assert r.from_shard(frames, 0.0) == []
    assert r.malformed_from_shards == len(bad) and sum(r.shard_inflight) == 1


def test_hello_registers_only_the_matching_identity_and_restart_frees_inflight():
    r = _router()
    hello = packb((OP_HELLO, {"shard": 1, "shards": 2, "pid": 10, "direct": "d", "pub": "p"}))
    r.from_shard([b"shard-0", b"", b"HELLO", hello], 0.0)  # claims shard 1 from shard-0
    assert 1 not in r.topology
    r.from_shard([b"shard-1", b"", b"HELLO", hello], 0.0)
    assert r.topology[1]["pid"] == 10
    sym = next(s for s in ("BTC-USD", "ETH-USD", "SOL-USD") if shard_for(s, 2) == 1)
    _send(r, _order_frames(b"c", b"r", sym))
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
    link, items = _send(r, _order_frames(b"c", b"r1", sym0), user=admin.public)
    assert link == b"\x00link-a" and items[2] == admin.public.encode()
    # a reply from any other connection is dropped, the request stays in flight
    assert r.from_shard(_reply(b"rogue", b"c", b"r1", b"forged"), 0.1) == []
    assert r.foreign_replies == 1 and r.shard_inflight[0] == 1
    assert r.from_shard(_reply(b"\x00link-a", b"c", b"r1", b"real"), 0.2) == [
        [b"c", b"r1", b"real"]
    ]
    assert r.shard_inflight[0] == 0
    # an unknown key is refused before routing
    dest, out = r.from_client(_order_frames(b"c", b"r2", sym0), 0.0, "x" * 40)
    assert dest == TO_CLIENT and "authentication failed" in decode_reply(out[2])[0]


def test_metrics_label_account_shards_apart_from_engine_shards():
    """Regression: account shard j (router slot N+j) was exported as ``shard="N+j"``, a phantom
    engine shard in every per-shard panel. Engine shards keep ``shardex_router_*{shard}``,
    account shards get ``shardex_router_account_*{account_shard="j"}``."""
    r = _router(accounts=2)
    r.forwarded[:] = [5, 6, 7, 8]
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in r.collect() for s in fam.samples}  # fmt: skip
    shard_labels = {dict(k[1]).get("shard") for k in samples if "shard" in dict(k[1])}
    assert shard_labels == {"0", "1"}  # engine shards only: no "2", no "3"
    assert samples[("shardex_router_forwarded_total", (("shard", "1"),))] == 6
    assert samples[("shardex_router_account_forwarded_total", (("account_shard", "0"),))] == 7
    assert samples[("shardex_router_account_forwarded_total", (("account_shard", "1"),))] == 8
    names = {k[0] for k in samples}
    assert {"shardex_router_account_shard_up", "shardex_router_account_inflight",
            "shardex_router_account_ack_seconds_count"} <= names  # fmt: skip
    assert len([k for k in samples if k[0] == "shardex_router_ack_seconds_count"]) == 2


def test_an_account_shard_leader_is_logged_by_its_own_name(caplog):
    """The router gives account shard j slot N + j; its replicated leader's hello was logged as
    ``shard 2: leader epoch 1`` (a shard that does not exist on a 2-shard cluster)."""
    r = _router(accounts=1)
    hello = packb((OP_HELLO, {"shard": 0, "shards": 1, "tier": "accounts", "pid": 9,
                              "epoch": 1, "direct": "d", "pub": "p"}))  # fmt: skip
    with caplog.at_level("WARNING", logger="shardex.router"):
        r.from_shard([b"accounts-0.e1", b"", b"HELLO", hello], 0.0)
    said = [rec.getMessage() for rec in caplog.records]
    assert "account shard 0: leader epoch 1 (pid 9)" in said, said
    assert not any(m.startswith("shard 2") for m in said), said

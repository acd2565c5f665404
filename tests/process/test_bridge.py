"""PUB → bridge → Redis Streams with a real Redis server: exactly once, in order, repaired.
(Drops forced by a SIGSTOPped bridge behind a tiny PUB HWM: tests/chaos/test_bridge_kills.py.)"""

from __future__ import annotations

import time
import urllib.request

import pytest

from shardex.wire.protocol import shard_for
from tests.support.bridge import BridgeProc, assert_exact, wait_until
from tests.support.bridge_load import Load, check_exactly_once, wait_for_streams
from tests.support.cluster import Cluster
from tests.support.redis import RedisServer


@pytest.fixture
def bridged(redis_server: RedisServer):
    cluster = Cluster(2, redis=redis_server.url)
    try:
        yield cluster, redis_server
    finally:
        cluster.stop()


def test_trades_reach_redis_exactly_once_in_order(bridged):
    cluster, server = bridged
    load = Load(cluster, rounds=10)
    load.run()
    assert not load.errors
    r = server.client()
    wait_for_streams(r, load, cluster)
    check_exactly_once(r, load, cluster)
    # the events stream carries the public schema with decimal strings
    first = r.xrange(f"shardex:events:{shard_for('BTC-USD', 2)}", count=1)[0][1]
    assert first["ev"] == "accepted" and first["symbol"] == "BTC-USD" and first["seq"] == "1"
    # tail prints the trades
    import subprocess
    import sys

    out = (
        subprocess.run(
            [
                sys.executable,
                "-m",
                "shardex.cli",
                "tail",
                "BTC-USD",
                "--redis-url",
                server.url,
                "--from-start",
                "--count",
                "3",
                "--json",
            ],
            capture_output=True,
            timeout=30,
            check=True,
        )
        .stdout.decode()
        .splitlines()
    )
    assert len(out) == 3 and '"price": "100.00"' in out[0]


def test_up_with_embedded_redis_bridges_by_default():
    cluster = Cluster(1, redis="embedded")
    try:
        load = Load(cluster, rounds=2, per_round=50)
        load.run()
        import redis

        from shardex.redisauth import RedisUsers

        # secure by default: the embedded server has ACL users; consumers read as ``reader``
        assert cluster.keys_dir is not None
        users = RedisUsers.load(cluster.keys_dir)
        r = redis.Redis.from_url(
            users.url(cluster.layout.redis_url, "reader"), decode_responses=True
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and r.xlen("shardex:trades:BTC-USD") < len(
            load.trades["BTC-USD"]
        ):
            time.sleep(0.2)
        assert r.xlen("shardex:trades:BTC-USD") == len(load.trades["BTC-USD"]) > 0
        assert "started redis (pid" in cluster.output()
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.xadd("shardex:trades:BTC-USD", {"forged": "1"})
        assert users.password("bridge") not in cluster.output()
    finally:
        cluster.stop()


# -- the bridge against a stand-in shard (real sockets, real protocol, real Redis) ----------------


@pytest.fixture
def fake_bridge(redis_server: RedisServer, tmp_path):
    from tests.support.fakeshard import FakeShards

    fake = FakeShards(1)
    bridge = BridgeProc(fake, redis_server.url, tmp_path)
    try:
        yield fake, bridge, redis_server.client()
    finally:
        bridge.stop()
        fake.stop()


def test_delayed_repair_replies_still_catch_up(fake_bridge):
    """Regression: status polls and repairs shared one socket and ate each other's replies, so a
    shard answering repairs after 6 s was never repaired (0 of 5 answered). Replies are now
    matched to their request; a late repair answer is still used."""
    from tests.support.fakeshard import trade

    fake, bridge, r = fake_bridge
    wait_until(lambda: fake.status_asked >= 1, 20, "the bridge polling the shard", bridge)
    wait_until(lambda: fake.subscribed[0] >= 1, 20, "the bridge's subscription", bridge)
    fake.repair_delay = 6.0
    fake.publish(trade, 200)
    fake.publish(trade, 200, drop=True)  # a hole the next message reveals
    fake.publish(trade, 200)
    fake.publish(trade, 100, drop=True)  # a tail only the status poll reveals
    wait_until(lambda: r.xlen("shardex:events:0") == fake.seq(), 40, "catch-up", bridge)
    assert_exact(r, fake, bridge)
    assert fake.repairs_answered >= 2
    m = bridge.metrics()
    assert m['shardex_bridge_repaired_events_total{shard="0"}'] >= 300
    assert m['shardex_bridge_lost_events_total{shard="0"}'] == 0


def test_reachable_shard_that_never_repairs_raises_a_stall_alert(fake_bridge):
    """A shard that answers its status but never re-sends a hole: within seconds an ALERT line and
    ``shardex_bridge_stalled{shard} 1``; once it answers, the gauge goes back to 0 and Redis is
    exact."""
    from tests.support.fakeshard import trade

    fake, bridge, r = fake_bridge
    wait_until(lambda: fake.status_asked >= 1, 20, "the bridge polling the shard", bridge)
    wait_until(lambda: fake.subscribed[0] >= 1, 20, "the bridge's subscription", bridge)
    fake.answer_repairs = False
    fake.publish(trade, 50)
    fake.publish(trade, 50, drop=True)
    fake.publish(trade, 50)
    stalled = 'shardex_bridge_stalled{shard="0"}'
    wait_until(lambda: bridge.metrics().get(stalled) == 1.0, 20, "stalled gauge 1", bridge)
    assert "ALERT shard 0 is reachable" in bridge.output()
    assert bridge.metrics()['shardex_bridge_alerts_total{kind="stalled",shard="0"}'] >= 1
    assert r.xlen("shardex:events:0") == 50
    fake.answer_repairs = True
    wait_until(lambda: r.xlen("shardex:events:0") == fake.seq(), 40, "catch-up", bridge)
    wait_until(lambda: bridge.metrics().get(stalled) == 0.0, 10, "stalled gauge 0", bridge)
    assert_exact(r, fake, bridge)
    assert "shard 0 is flowing again" in bridge.output()


def test_forged_entries_are_reported_and_the_rest_keeps_flowing(redis_server: RedisServer):
    """Regression: a foreign entry with a higher ID in ``shardex:events:1`` made Redis refuse the
    shard's next events as duplicates (lost in silence), and one in ``shardex:trades:BTC-USD``
    crashed the bridge in a loop (an XADD error inside the write script). Now: each refused entry
    is compared with what Redis holds; a foreign one is an ALERT and a counted conflict, nothing
    else stops, and the bridge starts fine over a stream top above the shard's seq."""
    r = redis_server.client()
    r.xadd("shardex:events:1", {"forged": "yes"}, id="50-0")  # shard 1 is ETH-USD's
    r.xadd("shardex:trades:BTC-USD", {"forged": "yes"}, id="30-0")  # shard 0 is BTC-USD's
    cluster = Cluster(2, redis=redis_server.url)
    try:
        load = Load(cluster, rounds=4, per_round=100)
        load.run()
        assert not load.errors
        with cluster.client() as c:
            status = {s["shard"]: s["seq"] for s in c.status()}
        assert status[1] > 50 and status[0] > 30

        def events_ids(shard: int) -> list[int]:
            return [int(e[0].split("-")[0]) for e in r.xrange(f"shardex:events:{shard}")]

        want1 = [50, *range(51, status[1] + 1)]
        want0 = list(range(1, status[0] + 1))
        wait_until(lambda: events_ids(0) == want0 and events_ids(1) == want1, 30, "both streams")
        # ETH-USD's trades all arrived (their events stream entries below 50 did not)
        eth = [int(e[0].split("-")[0]) for e in r.xrange("shardex:trades:ETH-USD")]
        assert eth == sorted(load.trades["ETH-USD"])
        # BTC-USD's trades above the forged ID arrived; those below are counted conflicts
        btc = r.xrange("shardex:trades:BTC-USD")
        assert btc[0] == ("30-0", {"forged": "yes"})
        assert [int(e[0].split("-")[0]) for e in btc[1:]] == sorted(
            s for s in load.trades["BTC-USD"] if s > 30
        )
        metrics = urllib.request.urlopen(
            f"http://127.0.0.1:{cluster.layout.bridge_metrics_port}/metrics", timeout=5
        ).read().decode()

        def sample(name: str) -> float:
            return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                       if line.startswith(name))  # fmt: skip

        assert sample('shardex_bridge_conflicts_total{shard="1",stream="shardex:events:1"}') == 50
        assert sample(
            'shardex_bridge_conflicts_total{shard="0",stream="shardex:trades:BTC-USD"}'
        ) == sum(1 for s in load.trades["BTC-USD"] if s <= 30)
        assert sample('shardex_bridge_alerts_total{kind="conflict"') >= 2
        out = cluster.output()
        assert "ALERT shardex:events:1 has 1 foreign entries at its top (up to 50-0)" in out
        assert "entries not stored in shardex:events:1" in out
        assert "entries not stored in shardex:trades:BTC-USD" in out
        assert out.count("started bridge (pid") == 1, "the bridge restarted"
        assert "Traceback" not in out
    finally:
        cluster.stop()


def test_garbage_on_pub_and_in_repair_replies_is_counted_and_ignored(fake_bridge):
    """Regression: the SUB reader trusted every event's shape; an event whose seq is not an int
    (or a NaN, a list, an unknown symbol's trade...) killed the writer task and the bridge. Now
    every malformed message or event is counted in ``shardex_bridge_malformed_total`` and
    dropped, real events keep flowing, and Redis ends exact."""
    import msgpack

    from shardex.wire.protocol import VERSION, encode_events
    from tests.support.fakeshard import accepted, trade

    fake, bridge, r = fake_bridge
    wait_until(lambda: fake.status_asked >= 1, 20, "the bridge polling the shard", bridge)
    wait_until(lambda: fake.subscribed[0] >= 1, 20, "the bridge's subscription", bridge)
    fake.garbage_repairs = 2  # the first two repair answers carry only garbage events
    pack = msgpack.packb
    garbage = [
        b"\xc1",
        pack("hello"),
        pack([VERSION + 1, 0, []]),
        pack([VERSION, 7, []]),
        pack([VERSION, 0, {"a": [1, 2]}]),
        encode_events(0, [(1, "x"), [1, 2.5, "BTC-USD"], (1, float("nan"), "BTC-USD")]),
        encode_events(0, [(1, 3, "NOPE-USD", 1, 1, "t", "m", 0, 1), (1, 1 << 63, "BTC-USD")]),
        encode_events(0, [(0, True, "BTC-USD", "o"), (2, 4, "BTC-USD", "o", "user", 1.5)]),
        pack([VERSION, 0, [[9, 1, "BTC-USD", "x"], None, {"seq": 1}]]),
    ]
    for k in range(6):
        fake.publish(trade if k % 2 else accepted, 40)
        for g in garbage:
            fake.publish_raw(b"BTC-USD", g)
        fake.publish_raw(b"only-one-frame")
    fake.publish(trade, 40, drop=True)  # a hole: repaired after two garbage answers
    fake.publish(trade, 40)
    wait_until(lambda: r.xlen("shardex:events:0") == fake.seq(), 30, "catch-up", bridge)
    assert_exact(r, fake, bridge)
    m = bridge.metrics()
    assert m['shardex_bridge_malformed_total{source="pub"}'] >= 6 * len(garbage)
    assert m['shardex_bridge_malformed_total{source="reply"}'] >= 2
    assert "dropping malformed input" in bridge.output()


# -- identity: the bridge as a CURVE client of shards and router ---------------------------------


def _stranger_sub(fake, server_public: str):
    """A SUB to the stand-in's PUB with a key no registry knows (the right server key, though)."""
    import zmq

    from shardex.auth import KeyFile, client_socket, keypair

    public, secret = keypair()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    client_socket(sub, KeyFile(public, secret, server_public))
    sub.connect(fake.layout.pub(0))
    return ctx, sub


def test_bridge_key_reads_a_curve_shard_and_a_stranger_gets_nothing(redis_server, tmp_path):
    """The stand-in is a CURVE server checked by the real ZAP handler: the bridge (its process
    key, role bridge) gets the topology, every PUB event and its repairs; a SUB with an unknown
    key, connected the whole time, receives nothing."""
    from shardex.auth import KeyStore
    from tests.support.fakeshard import FakeShards, accepted, trade

    keys = tmp_path / "keys"
    fake = FakeShards(1, keys_dir=str(keys))
    bridge = BridgeProc(fake, redis_server.url, tmp_path, keys_dir=keys)
    ctx, sub = _stranger_sub(fake, KeyStore(keys).server().public)
    r = redis_server.client()
    try:
        wait_until(lambda: fake.status_asked >= 1, 20, "the bridge polling the shard", bridge)
        wait_until(lambda: fake.subscribed[0] >= 1, 20, "the bridge's subscription", bridge)
        for k in range(5):
            fake.publish(trade if k % 2 else accepted, 30)
        fake.publish(trade, 30, drop=True)  # repaired over the authenticated direct port
        fake.publish(trade, 30)
        wait_until(lambda: r.xlen("shardex:events:0") == fake.seq(), 30, "catch-up", bridge)
        assert_exact(r, fake, bridge)
        assert sub.poll(200) == 0, "a SUB with an unknown key received events"
        assert "authenticated as bridge" in bridge.output()
        assert "ALERT" not in bridge.output()
    finally:
        sub.close(0)
        ctx.term()
        bridge.stop()
        fake.stop()


def test_bridge_with_an_unregistered_key_alerts_and_connects_once_registered(
    redis_server, tmp_path
):
    """A bridge whose key the cluster does not know: the router refuses it at the handshake, the
    bridge says so in an ALERT line and keeps trying (libzmq alone would never reconnect after a
    ZAP refusal); once the key is registered it gets the topology and writes every event."""
    import shutil

    from shardex.auth import SERVER_KEY_FILE, KeyFile, KeyStore, Registry
    from tests.support.fakeshard import FakeShards, trade

    cluster_keys = tmp_path / "cluster"
    fake = FakeShards(1, keys_dir=str(cluster_keys))
    # the bridge's own keys dir: the cluster's server key, but a registry of its own
    own = tmp_path / "own"
    own.mkdir(mode=0o700)
    shutil.copy(cluster_keys / SERVER_KEY_FILE, own / SERVER_KEY_FILE)
    Registry(own / "registry.json").save()
    bridge = BridgeProc(fake, redis_server.url, tmp_path, keys_dir=own)
    r = redis_server.client()
    try:
        fake.publish(trade, 50, drop=True)  # before the bridge is in: fetched by repair
        wait_until(lambda: "refused the bridge's key" in bridge.output(), 20, "an ALERT", bridge)
        out = bridge.output()
        assert "ALERT the router" in out and "ZAP status 400" in out
        assert fake.status_asked == 0 and bridge.proc.poll() is None
        bridge_key = KeyFile.read(own / "bridge.key")
        KeyStore(cluster_keys).registry().add("bridge", "bridge", public=bridge_key.public)
        fake.publish(trade, 50)
        wait_until(lambda: r.xlen("shardex:events:0") == fake.seq(), 30, "catch-up", bridge)
        assert_exact(r, fake, bridge)
        assert "accepts the bridge's key again" in bridge.output()
    finally:
        bridge.stop()
        fake.stop()


def test_shard_refusing_the_bridges_requests_is_an_alert_not_lost_events(fake_bridge):
    """Regression: a shard's refusal of a repair (``events: not allowed for this key``, what a
    shard answers a key without the bridge role) came back as a per-command error and was taken
    for "this range is gone": the bridge marked the events lost for ever. Now a refusal is an
    ``auth`` ALERT, the range is asked again, and once the shard answers nothing is lost."""
    from tests.support.fakeshard import trade

    fake, bridge, r = fake_bridge
    wait_until(lambda: fake.status_asked >= 1, 20, "the bridge polling the shard", bridge)
    wait_until(lambda: fake.subscribed[0] >= 1, 20, "the bridge's subscription", bridge)
    fake.publish(trade, 20)
    wait_until(lambda: r.xlen("shardex:events:0") == 20, 20, "the first events", bridge)
    fake.deny_events = "events: not allowed for this key"
    fake.publish(trade, 30, drop=True)  # a hole the bridge must repair
    fake.publish(trade, 10)
    wait_until(lambda: "refuses the bridge's repair requests" in bridge.output(), 20, "ALERT",
               bridge)  # fmt: skip
    asked = fake.repairs_asked
    fake.deny = "authentication failed: unknown key"  # whole requests refused, as for a key
    wait_until(lambda: "refuses the bridge's status requests" in bridge.output(), 20, "ALERT",
               bridge)  # fmt: skip
    assert r.xlen("shardex:events:0") == 20 and asked >= 1
    fake.deny = fake.deny_events = None
    wait_until(lambda: r.xlen("shardex:events:0") == fake.seq(), 30, "catch-up", bridge)
    assert_exact(r, fake, bridge)
    m = bridge.metrics()
    assert m['shardex_bridge_lost_events_total{shard="0"}'] == 0
    assert m['shardex_bridge_alerts_total{kind="auth",shard="0"}'] >= 2

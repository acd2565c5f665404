"""Balance changes (and an admin's restrictions of accounts) → Redis: ``shardex:balances:<j>``
through the bridge.

Real ``shardex up --accounts`` clusters (CURVE keys), a real redis-server, the real bridge. What
the stream must hold is read back from each account shard itself (its direct port re-sends any
range of its events, ``OP_EVENTS``): exactly its balance and fee-ledger events, in seq order,
each once, with exact decimal amounts — also after kill -9 of the bridge in the middle of load.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from decimal import Decimal as D

import pytest

from shardex.accounts.codes import A_DEPOSIT, AE_BALANCE, AE_FEES, AE_FILL, AE_FORWARD
from shardex.accounts.machines import AccountMachineFactory, EventRing
from shardex.config import load_markets
from shardex.node.accounts import AccountHandler
from shardex.node.shard import NullJournal
from shardex.wire.protocol import (
    OP_EVENTS,
    OP_STATUS,
    decode_reply,
    encode_events,
    encode_request,
    packb,
    unpackb,
)
from shardex.wire.pub import Malformed, check_account_event, decode_account_pub
from tests.support.accounts import (
    ASSETS,
    _converged,
    _flow,
    _stream,
    accounts_cluster,
)
from tests.support.redis import RedisServer

pytestmark = pytest.mark.timeout(120)


def test_event_ring_serves_contiguous_ranges_only():
    r = EventRing(5)
    r.extend([(AE_BALANCE, 1), (AE_BALANCE, 2)])
    r.extend([(AE_FORWARD, 3)])
    assert r.get(1, 3) == [(AE_BALANCE, 1), (AE_BALANCE, 2), (AE_FORWARD, 3)]
    assert r.get(2, 3) == [(AE_BALANCE, 2), (AE_FORWARD, 3)]
    assert r.get(2, 99) is None  # past the newest: not all held (callers cap at their seq)
    r.extend([(0, 4), (0, 5), (0, 6)])
    assert r.first == 2 and r.get(1, 2) is None  # fell off the ring: gone, never a part
    r.extend([(0, 9)])  # a hole: the ring restarts rather than serve a range across it
    assert r.first == 9 and r.get(6, 9) is None and r.get(9, 9) == [(0, 9)]


def _machine():
    return AccountMachineFactory(0, 1, lambda _s: 0).new(load_markets(None))


def test_events_survive_snapshot_restore_and_only_published_ones_are_served():
    m = _machine()
    out: list = []
    for k in range(3):
        m.apply((A_DEPOSIT, f"u{k}", "USD", 1_000_000, f"r{k}"), out)
    assert [ev[1] for ev in out] == [1, 2, 3]
    restored = AccountMachineFactory(0, 1, lambda _s: 0).restore(
        unpackb(packb(m.snapshot())), load_markets(None)
    )
    assert restored.events.get(1, 3) == m.events.get(1, 3)
    h = AccountHandler(m, NullJournal())
    # the bridge sees what was published (journaled) only, whatever the ring holds
    _, results = decode_reply(h.direct(encode_request([(OP_EVENTS, 1, 3)]), None, 2))
    assert [ev[1] for ev in results[0]["events"]] == [1, 2] and results[0]["seq"] == 2
    _, results = decode_reply(h.direct(encode_request([(OP_STATUS,)]), None, 2))
    assert results[0]["seq"] == 2
    for bad in [(OP_EVENTS, 0, 3), (OP_EVENTS, 3, 1), (OP_EVENTS, "1", 2), (99,)]:
        _, results = decode_reply(h.direct(encode_request([bad]), None, 3))
        assert "error" in results[0]


def test_bridge_account_decoders_refuse_garbage_without_crashing():
    ok = (AE_BALANCE, 5, "alice", "USD", 10, 0, "deposit", "d1")
    assert check_account_event(ok, ASSETS)
    assert check_account_event((AE_FEES, 6, "USD", 3), ASSETS)
    assert check_account_event((AE_FORWARD, 7, 0, 6, ("x",)), ASSETS)  # tracked, not written
    fill = (AE_FILL, 8, "alice", "BTC-USD", "o1", "t1", "maker", -3, -9, "USD")  # a rebate
    assert check_account_event(fill, ASSETS)
    assert check_account_event((AE_FEES, 9, "USD", -9), ASSETS)  # a ledger net of rebates
    for bad in [
        (AE_BALANCE, 5, "alice", "XYZ", 10, 0, "deposit", "d1"),  # unknown asset
        (AE_BALANCE, 5, "alice", "USD", -1, 0, "deposit", "d1"),  # negative
        (AE_BALANCE, 5, "alice", "USD", True, 0, "deposit", "d1"),  # bool is not an amount
        (AE_BALANCE, 0, "alice", "USD", 1, 0, "deposit", "d1"),  # seq 0
        (AE_FEES, 6, "USD"),
        fill[:-1],  # short
        (*fill[:-1], "XYZ"),  # unknown asset
        (*fill[:8], True, "USD"),  # bool is not an amount
        (99, 1),
        "x",
        (),
    ]:
        assert not check_account_event(bad, ASSETS), bad
    shard, good, nbad = decode_account_pub(encode_events(1, [ok, (99, 1)]), 2, ASSETS)
    assert (shard, good, nbad) == (1, [ok], 1)
    for payload in [b"junk", packb((1, 5, [])), packb((9, 0, [])), packb([1, 0])]:
        with pytest.raises(Malformed):
            decode_account_pub(payload, 2, ASSETS)


def test_balances_stream_exactly_once_also_across_a_bridge_kill(redis_server: RedisServer):
    cluster = accounts_cluster(1, 2, redis=redis_server.url)
    try:
        r = redis_server.client()
        with cluster.client() as c:
            _flow(c, "a", 6)
            assert c.restrict("buyer-a-0", True)["restricted"] is True
            assert c.restrict("buyer-a-0", False)["restricted"] is False
            _converged(cluster, r, 2)
            stream = _stream(r, 0) + _stream(r, 1)
            kinds = {f["ev"] for _, f in stream}
            assert kinds == {"balance", "fees", "fill", "restricted"}
            said = [f["restricted"] for _, f in stream if f["ev"] == "restricted"]
            assert said == ["true", "false"], stream
            whys = {f["why"] for _, f in stream if f["ev"] == "balance"}
            assert {"deposit", "hold", "trade", "release"} <= whys
            # a deposit's entry carries the exact amount and its ref
            dep = [f for _, f in stream if f.get("ref") == "a-d0a"]
            assert len(dep) == 1 and D(dep[0]["available"]) == D(1000)

            # kill -9 the bridge while orders flow; the supervisor restarts it, it resumes from
            # the streams' tops and repairs the rest from the account shards' rings
            errors: list[BaseException] = []
            halfway = threading.Event()

            def load() -> None:
                try:
                    with cluster.client() as c2:
                        _flow(c2, "b", 60, halfway)
                except BaseException as exc:  # reported by the main thread
                    errors.append(exc)

            old = cluster.child_pid("bridge")
            t = threading.Thread(target=load)
            t.start()
            assert halfway.wait(30)
            os.kill(old, signal.SIGKILL)
            t.join(60)
            assert not errors, errors
            assert not t.is_alive()
            deadline = time.monotonic() + 20
            while cluster.child_pid("bridge") == old:  # the supervisor restarts it
                assert time.monotonic() < deadline, "bridge not restarted"
                time.sleep(0.1)
            _converged(cluster, r, 2, timeout=30.0)
            for j in range(2):
                ids = [int(eid.split("-")[0]) for eid, _ in _stream(r, j)]
                assert ids == sorted(set(ids))  # in order, no duplicates
        assert "bridge (pid" in cluster.output() and "DIED" in cluster.output()
    finally:
        cluster.stop()

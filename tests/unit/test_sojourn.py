"""The CoDel-style controller (``shardex.node.sojourn.Codel``) on a fake clock (plain floats):
a standing queue is shed past the limit, a burst that drains is not, and the router sheds by a
shard's wait, not only by its queue's length. About 0.1 CPU s."""

from __future__ import annotations

import pytest

from shardex.node.router import Router, RouterConfig
from shardex.node.sojourn import Codel
from shardex.wire.protocol import BATCH, ERR_OVERLOADED, decode_reply, encode_batch, encode_request

T, I, L = 0.005, 0.100, 0.020  # target, interval, limit


def _feed(c: Codel, start: float, end: float, step: float, delay: float) -> list[bool]:
    """Requests every ``step`` s from ``start`` to ``end`` that all find a wait of ``delay``."""
    out = []
    now = start
    while now < end:
        out.append(c.observe(delay, now))
        now += step
    return out


def test_a_standing_queue_is_shed_past_the_limit_after_one_interval() -> None:
    c = Codel(T, I, L)
    # the first interval only measures: nothing is shed however long the wait
    assert not any(_feed(c, 0.0, I, 0.001, 0.030))
    # the whole interval stayed above target: from now on a wait past the limit is refused ...
    assert all(_feed(c, I, 2 * I, 0.001, 0.030))
    assert c.overloaded and c.shed == 100
    # ... and one within it is admitted even while overloaded
    assert c.observe(L, 2 * I + 0.01) is False


def test_a_burst_that_drains_within_the_interval_is_never_shed() -> None:
    c = Codel(T, I, L)
    for k in range(20):  # long waits, but each interval also saw the queue drained once
        base = k * I
        assert not any(_feed(c, base, base + 0.09, 0.001, 0.200))
        assert c.observe(0.0, base + 0.095) is False
    assert not c.overloaded and c.shed == 0


def test_overload_ends_with_the_first_interval_that_drains() -> None:
    c = Codel(T, I, L)
    _feed(c, 0.0, 2 * I, 0.001, 0.030)
    assert c.overloaded
    assert c.observe(0.001, 2 * I + 0.001) is False  # the wait fell below target once ...
    _feed(c, 2 * I + 0.002, 3 * I, 0.001, 0.030)
    assert c.observe(0.030, 3 * I + 0.001) is False  # ... so the next interval sheds nothing
    assert not c.overloaded


def test_a_quiet_gap_longer_than_an_interval_forgets_the_overload() -> None:
    c = Codel(T, I, L)
    _feed(c, 0.0, 2 * I, 0.001, 0.030)
    assert c.overloaded
    assert c.observe(0.030, 10.0) is False  # nothing arrived for seconds: no standing queue
    assert not c.overloaded


def test_limit_zero_turns_shedding_off_and_bad_settings_are_refused() -> None:
    c = Codel(T, I, 0.0)
    assert not any(_feed(c, 0.0, 5 * I, 0.001, 1.0))
    assert c.overloaded and c.shed == 0  # (the state is still kept)
    with pytest.raises(ValueError):
        Codel(T, 0.0, L)
    with pytest.raises(ValueError):
        Codel(-1.0, I, L)


# -- the router's admission: by its shard's wait ------------------------------------------------


def _order(client: bytes, req: bytes) -> list[bytes]:
    return [client, b"#0", req, encode_request([(1, "BTC-USD", "o", "a")])]


def _admit(r: Router, k: int, now: float) -> bytes | None:
    """Request ``k`` of its own client at ``now``: None if admitted (and sent), else the
    error of the immediate reply."""
    shard, reply = r.from_client(_order(f"c{k}".encode(), f"r{k}".encode()), now)
    if reply is None:
        r.take_batch(shard)
        return None
    error, _ = decode_reply(reply[2])
    return error


def test_router_sheds_by_the_shards_wait_long_before_its_inflight_cap() -> None:
    """A shard that stopped answering: 25 requests in flight (the count cap is 1000), yet
    once its oldest has waited past the target for a whole interval, a request that would
    wait past the limit is answered ``overloaded`` at once (counted as ``queued_too_long``);
    an answer that drains the shard's queue ends it."""
    r = Router(1, RouterConfig(1, "", ""))
    errors = [_admit(r, k, k * 0.01) for k in range(25)]  # one every 10 ms, never answered
    assert errors[:20] == [None] * 20  # the first interval measures; then within the limit
    shed = [e for e in errors if e is not None]
    assert shed and all(e.startswith(ERR_OVERLOADED) for e in shed)
    assert r.rejected["queued_too_long"] == len(shed) and r.shard_inflight[0] < 25
    assert r.shard_inflight[0] < r.cfg.max_inflight
    # the shard answers everything it holds: its queue is empty, the next request is admitted
    held = [k for k, e in enumerate(errors) if e is None]
    triples = [x for k in held for x in (f"c{k}".encode(), f"r{k}".encode(), b"ok")]
    r.from_shard([b"shard-0", b"", BATCH, encode_batch(triples)], 0.3)
    assert r.shard_inflight[0] == 0
    assert _admit(r, 99, 0.31) is None


def test_router_with_shedding_off_admits_up_to_the_count_cap() -> None:
    r = Router(1, RouterConfig(1, "", "", shed_limit=0.0))
    assert [_admit(r, k, k * 0.01) for k in range(50)] == [None] * 50
    assert r.rejected["queued_too_long"] == 0

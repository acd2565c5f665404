"""The hot loops run with the cyclic GC off (``shardex.node.runtime``); that is only safe if
their code creates no reference cycles, which these tests check: after driving each hot path
with the GC off, a full collection must find nothing to free."""

from __future__ import annotations

import gc
import random
from collections.abc import Iterator

import msgpack
import pytest

from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.journal import Journal
from shardex.node.router import Router, RouterConfig
from shardex.node.runtime import tune_gc
from shardex.node.shard import NullJournal, ShardCore
from shardex.tools.workload import Workload
from shardex.wire.protocol import (
    BATCH,
    OP_BOOK,
    OP_EVENTS,
    OP_ORDER,
    OP_STATUS,
    encode_batch,
    encode_reply,
    encode_request,
)


@pytest.fixture
def gc_off() -> Iterator[None]:
    """The GC off as in a shard, with a clean slate; a full collection afterwards counts what
    the code under test dropped in cycles while it ran (what would leak with the GC off; the
    objects under test stay alive: a process's own long-lived structures may well refer to
    themselves, e.g. a dispatch table of bound methods, and are never dropped)."""
    was = gc.isenabled()
    for _ in range(20):  # until a collection frees nothing: finalizers (``__del__``, e.g. of an
        if not gc.collect():  # earlier test's asyncio or Redis objects) run by one collection
            break  # drop more cycles, which the next one frees; left, they counted as this
    gc.disable()  # test's (CI: 175-8,759 "cycles" in five tests, none of them theirs)
    try:
        yield
    finally:
        if was:
            gc.enable()


def _cycles() -> int:
    return gc.collect()


def _workload(n: int, seed: int) -> list:
    wl = Workload(symbols=("BTC-USD", "ETH-USD"), seed=seed, markets=DEFAULT_MARKETS)
    return wl.warmup(2000) + wl.take(n)


GARBAGE = [
    (0, "BTC-USD"), ("x",), (), (3, "BTC-USD", "i", "a", None, None), (1, "ETH-USD", "o", "a", 9),
    (2, 5, [], {}), [0, "BTC-USD", "z"], None, b"\x00", {"op": 0}, (4, "", "", "bad", 99),
]  # fmt: skip


def test_tune_gc_freezes_start_up_objects_and_turns_the_collector_off(monkeypatch):
    monkeypatch.delenv("SHARDEX_GC", raising=False)
    was = gc.isenabled()
    book = [{"order": i} for i in range(1000)]  # long-lived state built at start-up
    from prometheus_client import REGISTRY, generate_latest

    try:
        assert tune_gc()
        assert not gc.isenabled()
        assert gc.get_freeze_count() >= len(book)
        assert b"shardex_gc_young_objects " in generate_latest(REGISTRY)  # the leak gauge
    finally:
        gc.unfreeze()
        if was:
            gc.enable()


def test_shardex_gc_default_keeps_pythons_settings(monkeypatch):
    monkeypatch.setenv("SHARDEX_GC", "default")
    was = gc.isenabled()
    assert not tune_gc()
    assert gc.isenabled() == was and gc.get_freeze_count() == 0


def test_engine_creates_no_reference_cycles(gc_off):
    eng = Engine(DEFAULT_MARKETS, recent=1000)  # small window: generations rotate in the run
    cmds = _workload(30_000, 3)
    rng = random.Random(3)
    out: list = []
    for n, cmd in enumerate(cmds):
        eng.apply(rng.choice(GARBAGE) if n % 50 == 0 else cmd, out)
        if len(out) > 10_000:
            out.clear()
    for symbol in ("BTC-USD", "ETH-USD"):
        eng.order_status(symbol, "acct-1", "x", lambda f, last: None)
    snap = eng.snapshot()
    Engine.restore(snap, DEFAULT_MARKETS, recent=1000)
    del eng, snap, out
    assert _cycles() == 0


def test_shard_core_requests_create_no_reference_cycles(gc_off, tmp_path):
    journal = Journal(tmp_path / "j", DEFAULT_MARKETS)
    journal.recover()
    core = ShardCore(0, 1, DEFAULT_MARKETS, None, journal, ring_size=4096)
    rng = random.Random(5)
    cmds = _workload(5_000, 5)
    out: list = []
    for i in range(0, len(cmds), 7):
        reply = core.handle(encode_request(cmds[i : i + 7]), out, {"uptime_s": 1.0})
        assert reply
        journal.commit()
        core.ring.extend(out)
        out.clear()
    reads = [(OP_STATUS,), (OP_BOOK, "BTC-USD", 50), (OP_EVENTS, 1, 500),
             (OP_ORDER, "BTC-USD", "acct-1", "x")]  # fmt: skip
    for r in reads:
        core.handle(encode_request([r]), out, {})
    for _ in range(500):  # hostile payloads of every shape
        junk = rng.choice(GARBAGE)
        for payload in (msgpack.packb([1, [junk]]), bytes(rng.randrange(256) for _ in range(9))):
            try:
                core.handle(payload, out, {})
            except Exception:  # pragma: no cover - the fuzz tests own this property
                pytest.fail("ShardCore.handle raised")
    journal.commit()
    assert _cycles() == 0  # (the core itself is alive: only what operation dropped counts)
    journal.close()


def test_router_decisions_create_no_reference_cycles(gc_off):
    r = Router(2, RouterConfig(2, "", ""))
    rng = random.Random(7)
    for n in range(5_000):
        frames = [f"c{n % 13}".encode(), rng.choice([b"BTC-USD", b"ETH-USD", b"", b"#9"]),
                  n.to_bytes(8, "little"), encode_request([(1, "BTC-USD", "o", "a")])]  # fmt: skip
        if n % 97 == 0:
            frames = frames[:2]
        shard, reply = r.from_client(frames, float(n))
        if reply is None and r.batch_full(shard):
            r.take_batch(shard)
        if n % 10 == 9:
            for s in list(r.ready):
                link, items = r.take_batch(s)
                triples = []
                for i in range(0, len(items), 4):
                    triples += [items[i], items[i + 1], encode_reply([()])]
                if n % 20 == 9:
                    r.from_shard([b"shard-%d" % s, b"", BATCH, encode_batch(triples)], float(n))
                else:
                    r.batch_failed(s, items, unreachable=n % 3 == 0)
            r.ready.clear()
    r.from_shard([b"shard-0", b"", BATCH, b"\xc1"], 1.0)
    r.expire(1e9)
    list(r.collect())
    assert _cycles() == 0


def test_null_journal_shard_core_creates_no_cycles_either(gc_off):
    core = ShardCore(0, 1, DEFAULT_MARKETS, None, NullJournal(), ring_size=256)
    out: list = []
    for i, cmd in enumerate(_workload(3_000, 9)):
        core.handle(encode_request([cmd]), out, {})
        if i % 100 == 0:
            out.clear()
    assert _cycles() == 0


def test_account_core_creates_no_reference_cycles(gc_off):
    """The account shard runs with the GC off too (``AccountNode`` calls ``tune_gc``)."""
    from shardex.accounts.codes import A_DEPOSIT, A_NEW, A_WITHDRAW, S_CANCELLED, S_TRADE
    from shardex.accounts.core import AccountCore, Fee
    from shardex.engine.codes import BUY, GTC, LIMIT, SELL

    c = AccountCore(DEFAULT_MARKETS, fees={"BTC-USD": Fee(2, 5)})
    out: list = []
    seq = 0
    for i in range(1_000):
        for cmd in (
            (A_DEPOSIT, "alice", "USD", 100_000_000, f"d{i}"),
            (A_DEPOSIT, "bob", "BTC", 10_000_000, f"e{i}"),
            (A_NEW, "BTC-USD", f"ask{i}", "bob", SELL, LIMIT, 2_900_000, 4, GTC, False, 0, None),
            (A_NEW, "BTC-USD", f"b{i}", "alice", BUY, LIMIT, 3_000_000, 10, GTC, False, 0, None),
            (S_TRADE, 0, seq + 1, seq, "BTC-USD", 2_900_000, 4, "alice", f"b{i}", "bob",
             f"ask{i}", BUY, i + 1),  # fmt: skip
            (S_CANCELLED, 0, seq + 2, seq + 1, "BTC-USD", "alice", f"b{i}", "user", 6),
            (A_WITHDRAW, "bob", "USD", 1_000, f"w{i}"),
            (A_NEW, "BTC-USD", f"x{i}", "carol", BUY, LIMIT, 3_000_000, 10, GTC, False, 0, None),
            GARBAGE[i % len(GARBAGE)],
        ):
            c.apply(cmd, out)
        seq += 2
        if len(out) > 5_000:
            out.clear()
    c.check_integrity()
    assert not c.orders  # every order of the run ended
    c.snapshot()
    assert _cycles() == 0


def test_settled_engine_creates_no_reference_cycles(gc_off):
    """With accounts on, an engine shard runs ``SettledEngine`` (engine + settlement feed)."""
    from shardex.accounts.machines import SettledEngine
    from shardex.engine.codes import OP_NEW
    from shardex.wire.protocol import OP_FORWARD

    eng = SettledEngine(Engine(DEFAULT_MARKETS, recent=1000), 0, 2)
    out: list = []
    for n, cmd in enumerate(_workload(20_000, 11)):
        if cmd[0] == OP_NEW and n % 3:  # most new orders come forwarded by an account shard
            eng.apply((OP_FORWARD, n % 2, n, eng.inbox.last.get(n % 2, 0), cmd), out)
        else:
            eng.apply(cmd, out)
        if len(out) > 5_000:
            out.clear()
            eng.outgoing.clear()
    assert eng.inbox.last.get(0, 0) > 1_000 and eng.inbox.last.get(1, 0) > 1_000  # applied
    eng.snapshot()
    assert _cycles() == 0

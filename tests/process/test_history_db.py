"""The history writer and reader against both databases: SQLite (a file) and PostgreSQL (a
private server of Debian's package, one for this module, a fresh database per test). The
same tests run against both. The streams are fakeredis's, filled with entries made by the
bridge's own formatter (``tests.support.history``)."""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY

from shardex.cli import main
from shardex.history import History, QueryError, Store
from shardex.history.schema import BY_NAME
from shardex.history.writer import HistoryWriter, WriterConfig
from tests.support.history import Story, load
from tests.support.postgres import PostgresServer

TABLES = ("hx_orders", "hx_order_events", "hx_fills", "hx_balances")
CFG = WriterConfig(shards=1, accounts=1, batch=3)  # (small batches: several transactions)


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_db(request: pytest.FixtureRequest, tmp_path: Any) -> Callable[[], str]:
    """A maker of fresh, empty databases (URLs) of the dialect of the test's parameter."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg").new_database
    made = itertools.count()
    return lambda: f"sqlite:///{tmp_path / f'history-{next(made)}.sqlite'}"


@pytest.fixture
def db_url(fresh_db: Callable[[], str]) -> str:
    return fresh_db()


def _redis() -> Any:
    return fakeredis.FakeRedis(decode_responses=True)


def _drain(writer: HistoryWriter) -> None:
    """Rounds until a round applies nothing (bounded: a writer that loops is a failure)."""
    for _ in range(1000):
        if not writer.step():
            return
    raise AssertionError("the writer never ran out of entries")


def _counts(store: Store) -> dict[str, int]:
    return {t: store.query(f"SELECT COUNT(*) FROM {t}")[0][0] for t in TABLES}


def _rows(store: Store) -> dict[str, list[tuple]]:
    return {t: store.query(f"SELECT * FROM {t} ORDER BY hid") for t in TABLES}


class Crash(Exception):
    pass


class CrashingStore(Store):
    """Dies inside its ``crash_at``-th write transaction, after the inserts ran and before
    the commit (as a process killed there): the database must keep nothing of it."""

    def __init__(self, url: str, crash_at: int) -> None:
        self.left: int | None = None  # (creating the tables is not one of them)
        super().__init__(url)
        self.left = crash_at

    def _transaction(self, body: Any) -> Any:
        if self.left is None:
            return super()._transaction(body)

        def dying(cur: Any) -> Any:
            out = body(cur)
            self.left -= 1
            if self.left == 0:
                raise Crash
            return out

        return super()._transaction(dying)


def test_every_row_is_written_once_and_a_replay_adds_nothing(db_url: str):
    story = Story(3)
    r = _redis()
    load(r, story.streams)
    with Store(db_url) as store:
        _drain(HistoryWriter(CFG, r, store))
        want = {"hx_orders": 6, "hx_order_events": 9, "hx_fills": 6, "hx_balances": 6}
        assert _counts(store) == want
        before = _rows(store)
        tops = {k: int(v[-1][0].split("-")[0]) for k, v in story.streams.items()}
        assert store.positions() == tops
        # every stream read again from its start (positions lost): nothing new
        store.apply({}, {k: 0 for k in tops})
        _drain(HistoryWriter(CFG, r, store))
        assert _rows(store) == before and store.positions() == tops
    fills = before["hx_fills"]
    assert {(f[1], f[4], f[5]) for f in fills} == {
        (f"{who}{k}", role, side) for k in range(3)
        for who, role, side in (("b", "taker", "buy"), ("a", "maker", "sell"))}  # fmt: skip


@pytest.mark.parametrize("crash_at", [1, 2, 4])
def test_a_crash_inside_a_write_leaves_nothing_of_it_and_the_restart_resumes(
    db_url: str, fresh_db: Callable[[], str], crash_at: int
):
    story = Story(3)
    r = _redis()
    load(r, story.streams)
    with Store(db_url) as clean:
        _drain(HistoryWriter(CFG, r, clean))
        want = _counts(clean)
        clean_rows = {t: [row[1:] for row in rows] for t, rows in _rows(clean).items()}
    url2 = fresh_db()
    crashing = CrashingStore(url2, crash_at)
    with pytest.raises(Crash):
        _drain(HistoryWriter(CFG, r, crashing))
    crashing.close()
    with Store(url2) as store:
        pos = store.positions()
        got = {t: [row[1:] for row in rows] for t, rows in _rows(store).items()}
        # what survived is exactly the entries up to each stream's stored position
        assert sum(len(v) for v in got.values()) < sum(want.values())
        assert got == _upto(clean_rows, pos)
        _drain(HistoryWriter(CFG, r, store))  # the restart
        got = {t: [row[1:] for row in rows] for t, rows in _rows(store).items()}
        assert {t: sorted(v, key=repr) for t, v in got.items()} == \
            {t: sorted(v, key=repr) for t, v in clean_rows.items()}  # fmt: skip


def _upto(rows: dict[str, list[tuple]], pos: dict[str, int]) -> dict[str, list[tuple]]:
    """The rows whose origin entry is at or below its stream's position."""
    out = {}
    for t, batch in rows.items():
        names = BY_NAME[t].names
        if "eseq" in names:
            key, seq = "shardex:events:0", names.index("eseq")
        else:
            key = "shardex:orders:0" if t == "hx_orders" else "shardex:balances:0"
            seq = names.index("aseq")
        out[t] = [row for row in batch if row[seq] <= pos.get(key, 0)]
    return out


def test_a_fill_waits_for_its_orders_entry(db_url: str):
    story = Story(1)
    r = _redis()
    load(r, story.streams, only=("shardex:balances:0", "shardex:events:0"))
    with Store(db_url) as store:
        w = HistoryWriter(CFG, r, store)
        _drain(w)
        # the two accepted events went in; the trade (no order known yet) waits, and so
        # does everything after it
        assert _counts(store)["hx_fills"] == 0 and _counts(store)["hx_order_events"] == 2
        assert store.positions()["shardex:events:0"] == 2
        load(r, story.streams, only=("shardex:orders:0",))
        _drain(w)
        assert _counts(store) == {"hx_orders": 2, "hx_order_events": 3, "hx_fills": 2,
                                  "hx_balances": 2}  # fmt: skip


def test_pages_stay_right_while_rows_are_written(db_url: str):
    story = Story(12, same=True)
    r = _redis()
    half = {k: v[: len(v) // 2] for k, v in story.streams.items()}
    load(r, half)
    with Store(db_url) as store, History(db_url) as h:
        w = HistoryWriter(CFG, r, store)
        _drain(w)
        seen: list[dict] = []
        page = h.page("alice", "orders", limit=4)
        seen += page.rows
        # the other half arrives between two pages
        for k, v in story.streams.items():
            for eid, f in v[len(v) // 2 :]:
                r.xadd(k, f, id=eid)
        _drain(w)
        while page.next is not None:
            page = h.page("alice", "orders", limit=4, after=page.next)
            seen += page.rows
        assert [o["id"] for o in seen] == [f"sa{k}" for k in range(12)]
        assert all(o["status"] == "cancelled" and o["filled"] == "0.0040" for o in seen)
        assert [f["trade_id"] for f in h.rows("bob", "fills", limit=5)] == \
            [1000 + k for k in range(12)]  # fmt: skip


def test_filters_csv_and_refusals(db_url: str):
    base = 1_796_640_000_000
    story = Story(4, ts=base, same=True)
    r = _redis()
    load(r, story.streams)
    with Store(db_url) as store:
        _drain(HistoryWriter(CFG, r, store))
    with History(db_url) as h:
        assert h.page("alice", "orders", symbol="ETH-USD").rows == []
        assert len(h.page("alice", "orders", symbol="BTC-USD").rows) == 4
        # the trades are the events stream's entries 3, 7, 11, 15: ts base+2, +6, +10, +14
        got = h.page("alice", "fills", since=base + 1, until=base + 7).rows
        assert [f["ts"] for f in got] == [base + 2, base + 6]
        assert {b["asset"] for b in h.page("bob", "balances", symbol="USD").rows} == {"USD"}
        assert h.page("bob", "balances", symbol="BTC").rows == []
        text = h.csv("alice", "orders")
        back = list(csv.DictReader(io.StringIO(text)))
        rows = list(h.rows("alice", "orders"))
        assert [dict(x) for x in back] == [
            {k: "" if v is None else str(v) for k, v in row.items()} for row in rows]  # fmt: skip
        with pytest.raises(QueryError) as info:
            h.page("alice", "orders", after="f3")
        assert info.value.code == "bad_cursor"


def test_the_history_command(db_url: str):
    story = Story(3, same=True)
    r = _redis()
    load(r, story.streams)
    with Store(db_url) as store:
        _drain(HistoryWriter(CFG, r, store))
    run = CliRunner().invoke
    res = run(main, ["history", "alice", "--history-db", db_url, "--limit", "2"])
    assert res.exit_code == 0, res.output
    assert "sa0" in res.output and "sa1" in res.output and "sa2" not in res.output
    assert "more: --after o" in res.output
    res = run(main, ["history", "bob", "--history-db", db_url, "--kind", "fills", "--csv"])
    assert res.exit_code == 0 and res.output.splitlines()[0].startswith("cursor,ts,account")
    assert len(res.output.splitlines()) == 4
    res = run(main, ["history", "bob", "--history-db", db_url, "--after", "x1"])
    assert res.exit_code == 1 and "bad_cursor" in res.output and "Traceback" not in res.output


def test_events_gone_from_redis_are_counted_not_hidden(db_url: str):
    story = Story(2)
    r = _redis()
    load(r, story.streams)
    r.xdel("shardex:events:0", "1-0", "2-0")  # (as a --maxlen trim the writer lagged behind)
    key = {"stream": "shardex:events:0"}
    before = REGISTRY.get_sample_value("shardex_history_gone_total", key) or 0
    with Store(db_url) as store:
        _drain(HistoryWriter(CFG, r, store))
        assert _counts(store)["hx_order_events"] == 4  # (6 less the two accepted deleted)
    assert REGISTRY.get_sample_value("shardex_history_gone_total", key) == before + 2

"""Load generator: config validation, the one workload generator, fates of open outcomes
(stand-in cluster: timeouts, the router's "may have run" answers, questions refused as
overloaded; the pure ``FateTracker``; a real kill -9 of a leader), the pure event counter, and
on the real cluster a full report and Ctrl-C/SIGTERM returning a partial one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardex.accounts.core import account_shard_for
from shardex.client import ClientCore
from shardex.engine import DEFAULT_MARKETS
from shardex.engine.codes import OP_AMEND, OP_CANCEL, OP_NEW, OP_REJECT
from shardex.tools.fates import FateTracker, Step, why_unknown
from shardex.tools.loadgen import (
    DEFAULT_MIX,
    FATES,
    LoadConfig,
    LoadError,
    Progress,
    format_report,
    run,
)
from shardex.tools.loadproc import sdk_core
from shardex.tools.workload import DEFAULT_MIX_TEXT, Workload
from shardex.wire import codes
from shardex.wire.protocol import (
    ERR_OVERLOADED,
    ERR_UNAVAILABLE,
    OP_ORDER,
    ErrorText,
    encode_reply,
    journal_error,
    leader_changed_error,
    markets_to_wire,
    not_leader_error,
    recovering_error,
    shard_for,
)
from tests.support.cluster import Cluster
from tests.support.standin import StandIn, shard_like
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
EP = "tcp://127.0.0.1:5555"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"duration": 0}, "--duration must be > 0"),
        ({"duration": -1.0}, "--duration must be > 0"),
        ({"duration": None}, "a run must end"),
        ({"orders": 0, "duration": None}, "--orders must be >= 1"),
        ({"rate": 0.0}, "--rate must be > 0"),
        ({"batch": 0}, "--batch must be >= 1"),
        ({"mix": "limit=5,teleport=1"}, "unknown kind 'teleport'"),
        ({"endpoint": "localhost:5555"}, "tcp://host:port"),
        ({"symbols": 0}, "--symbols must be >= 1"),
    ],
)
def test_config_rejects_what_cannot_run(kw: dict, message: str) -> None:
    with pytest.raises(LoadError, match=message):
        LoadConfig(**{"endpoint": EP, **kw})


def test_one_generator_one_default_mix() -> None:
    cfg = LoadConfig(endpoint=EP)
    assert cfg.mix == DEFAULT_MIX
    assert DEFAULT_MIX_TEXT == "limit=45,ioc=10,market=5,cancel=35,amend=5"
    a = Workload(["BTC-USD", "ETH-USD"], seed=3, shadow=False, prefix="p-").take(5000)
    b = Workload(["BTC-USD", "ETH-USD"], seed=3, shadow=False, prefix="p-").take(5000)
    assert a == b and a[0][2].startswith("p-")
    kinds = {c[0] for c in a}
    assert len(kinds) == 3  # new, cancel and amend all appear
    with pytest.raises(ValueError, match="teleport"):
        Workload(["BTC-USD"], mix={"teleport": 1})
    desc = LoadConfig(endpoint=EP, symbols=["ETH-USD"], rate=100.0).describe()
    for key in ("symbols", "seed", "duration", "rate", "mix", "connections", "procs", "batch"):
        assert key in desc
    assert desc["symbols"] == ["ETH-USD"] and desc["mode"] == "open"
    assert desc["mix"] == DEFAULT_MIX_TEXT


def test_timeouts_get_their_fate_asked_and_counted() -> None:
    """Every 5th new order's frame is dropped; its fate is live (executed), unknown (not
    executed), or not answered (unknown) by the order id."""

    def silent(c: tuple) -> bool:
        return c[0] == OP_NEW and int(c[2].rsplit("-", 1)[1]) % 5 == 0

    def state(c: tuple) -> dict | None:
        n = int(c[3].rsplit("-", 1)[1]) // 5 % 3
        if n == 2:
            return None
        if n == 1:
            return {"state": "unknown", "symbol": c[1], "id": c[3], "seq": 1}
        return {"state": "live", "symbol": c[1], "id": c[3], "seq": 1, "side": 0, "price": 1,
                "qty": 1}  # fmt: skip

    topo = [{"shard": 0, "pid": 1, "markets": markets_to_wire(DEFAULT_MARKETS)}]
    seen: list[Progress] = []
    with StandIn(shard_like(DEFAULT_MARKETS, topo, silent=silent, order_state=state)) as si:
        cfg = LoadConfig(
            endpoint=si.endpoint,
            rate=200.0,
            batch=1,
            orders=400,
            duration=None,
            timeout=0.3,
            mix="limit=1",
            fate_wait=3.0,
            window=64,  # (frames of fate questions in flight)
        )
        rep = run(cfg, on_progress=seen.append)
    d = rep.to_dict()
    # 80 frames dropped (on a loaded box a slow answer may time out too, and be asked)
    assert d["timeouts"] >= 80 and d["sent"] == 400 and d["acked"] + d["timeouts"] == 400
    assert sum(d["fates"].values()) == d["timeouts"] and set(d["fates"]) == set(FATES)
    assert all(d["fates"][k] > 0 for k in FATES), d["fates"]
    # the unanswered questions were asked again until fate_wait, then said why
    assert d["unknown_why"] == {"timeout": d["fates"]["unknown"]}, d
    assert d["fate_questions"] > 80
    assert not d["interrupted"] and d["config"]["orders"] == 400
    assert seen and seen[-1].timeouts > 0


def _n(order_id: str) -> int:
    return int(order_id.rsplit("-", 1)[1])


def _live(c: tuple) -> dict:
    return {"state": "live", "symbol": c[1], "id": c[3], "seq": 1, "side": 0, "price": 1, "qty": 1}


def test_router_may_have_run_answers_and_overloaded_questions_get_their_fate() -> None:
    """Regression: the router's "it may have run: ask its fate" answer (a failover) was
    counted as a timeout and its fate never asked (executed 0, not executed 0, unknown 0), and a
    fate question refused as overloaded was asked at most twice, then counted unknown. Here every
    4th new order gets the router's answer; every fate question is refused as overloaded three
    times before the shard answers (even n: live, odd n: never there)."""
    base = shard_like(DEFAULT_MARKETS, [{"shard": 0, "pid": 1}])
    refused: dict[str, int] = {}

    def handler(key: bytes, cmds: tuple) -> bytes | None:
        if key and cmds and cmds[0][0] == OP_ORDER:
            results = []
            for c in cmds:
                refused[c[3]] = refused.get(c[3], 0) + 1
                if refused[c[3]] <= 3:
                    return encode_reply(None, ERR_OVERLOADED)
                n = _n(c[3]) // 4
                results.append(_live(c) if n % 2 == 0 else {"state": "unknown", "symbol": c[1],
                                                             "id": c[3], "seq": 1})  # fmt: skip
            return encode_reply(results)
        if key and any(c[0] == OP_NEW and _n(c[2]) % 4 == 0 for c in cmds):
            return encode_reply(None, leader_changed_error(0.2, 0, 2))
        return base(key, cmds)

    with StandIn(handler) as si:
        cfg = LoadConfig(endpoint=si.endpoint, rate=400.0, batch=1, orders=200, duration=None,
                         timeout=2.0, mix="limit=1", fate_wait=20.0)  # fmt: skip
        d = run(cfg).to_dict()
    assert d["sent"] == 200 and d["timeouts"] >= 50, d  # (≥: a slow box may time out more)
    assert sum(d["fates"].values()) == d["timeouts"] and d["fates"]["unknown"] == 0, d
    assert d["fates"]["executed"] >= 25 and d["fates"]["not_executed"] >= 25, d
    assert d["unknown_why"] == {} and all(v == 4 for v in refused.values()), refused
    assert "fates of open outcomes" in "\n".join(format_report(d))


class _Core(ClientCore):
    def __init__(self) -> None:
        super().__init__("tcp://127.0.0.1:5555", markets=DEFAULT_MARKETS, key=False)


def _answer_all(t: FateTracker, steps: list[Step], now: float, error=None, state=None) -> list:
    out = []
    for st in steps:
        res = None if error else [state(q) for q in st.queries]
        out += t.answer(st.token, st.positions, error, res, now)
    return out


def test_fate_tracker_backs_off_asks_until_the_deadline_and_says_why() -> None:
    t = FateTracker(_Core(), batch=2)
    cmds = [(OP_NEW, "BTC-USD", f"o-{i}", "a", 0, 0, 1, 100, 0, 0, 0) for i in range(3)]
    cmds.append((OP_CANCEL, "BTC-USD", "o-9", "a"))
    for c in cmds:
        t.add(c, 0.0)
    steps = t.due(0.0)
    assert [len(s.queries) for s in steps] == [2, 2] and t.open == 4  # ≤ batch per dialogue
    assert _answer_all(t, steps, 0.0, error=ERR_OVERLOADED) == []
    assert t.open == 4 and t.due(0.1) == []  # backing off: not due yet
    assert t.next_due() == 0.25
    steps = t.due(0.3)
    _answer_all(t, steps, 0.3, state=lambda q: _live(q) if q[3] == "o-0" else None)
    # o-0 executed; the rest answered with garbage: unknown at once (asking again won't help)
    assert t.fates == {"executed": 1, "not_executed": 0, "unknown": 3}
    assert t.why == {"unreadable_state": 3} or t.why == {"malformed_reply": 3}, t.why
    t2 = FateTracker(_Core(), batch=10)
    t2.add(cmds[0], 0.0)
    _answer_all(t2, t2.due(0.0), 0.0, error=ErrorText(codes.TIMEOUT, "timeout after 1.0s"))
    t2.finish(0.2)
    assert t2.due(5.0) == [] and t2.done  # past the deadline: unknown with the last reason
    assert t2.fates["unknown"] == 1 and t2.why == {"timeout": 1}
    t4 = FateTracker(_Core(), batch=1, window=2)  # questions never flood an overload
    for c in cmds:
        t4.add(c, 0.0)
    assert len(t4.due(0.0)) == 2 and t4.due(0.0) == [] and t4.open == 4
    t4.finish(0.5)
    assert t4.due(1.0) == [] and t4.why == {"not_asked_before_deadline": 2}  # never sent
    t3 = FateTracker(_Core(), batch=10, limit=1)
    t3.add(cmds[0], 0.0)
    t3.add(cmds[1], 0.0)
    t3.add(("garbage",), 0.0)
    t3.abandon()
    assert t3.why == {"not_asked_over_limit": 1, "unreadable_state": 1, "interrupted": 1}


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (ErrorText(codes.TIMEOUT, "timeout after 5.0s"), "timeout"),
        (leader_changed_error(1.0, 0, 3), "timeout"),
        (ERR_OVERLOADED, "overloaded"),
        (not_leader_error(3, "standby", routed=True), "not_leader"),
        (not_leader_error(3, "fenced"), "not_leader"),
        (ERR_UNAVAILABLE, "shard_unavailable"),
        (journal_error("disk full"), "journal_unavailable"),
        (recovering_error("shard 0", {}, "replaying its journal"), "recovering"),
        (ErrorText(codes.UNREACHABLE, "cannot reach tcp://x:1"), "cannot_reach"),
        (ErrorText(codes.MALFORMED_REPLY, "malformed reply: result count"), "malformed_reply"),
        (ErrorText(codes.HALTED, "halted: x"), "other_error"),
        ("timeout after 5.0s", "other_error"),  # a bare text: no code, nothing reads it
    ],
)
def test_unknown_reasons_are_read_from_the_error_codes(error: str, why: str) -> None:
    assert why_unknown({"error": error}) == why
    assert why_unknown({"state": "held", "pending": 2}) == "amend_in_flight"
    assert why_unknown(None) == "unreadable_state"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """One real cluster for the module's loadgen runs (none kills or reconfigures it; each
    counts from what the cluster had done before it): three cluster starts fewer."""
    c = Cluster(2)
    try:
        yield c
    finally:
        c.stop()


def test_real_cluster_report_and_config(cluster: Cluster) -> None:
    seen: list[Progress] = []
    cfg = LoadConfig(
        endpoint=cluster.endpoint,
        orders=3000,
        duration=None,
        procs=2,
        symbols=3,
        key=str(cluster.key),  # the admin key: loadgen's accounts acct-N are nobody's own
    )
    rep = run(cfg, on_progress=seen.append)
    d = rep.to_dict()
    assert d["sent"] == 3000 and d["acked"] == 3000 and d["timeouts"] == 0
    assert d["fates"] == dict.fromkeys(FATES, 0) and not d["interrupted"]
    assert d["config"]["symbols"] == list(DEFAULT_MARKETS)[:3]
    assert d["config"]["procs"] == 2 and d["config"]["seed"] == 1
    json.dumps(d)  # the report is JSON as is


SCRIPT = """
import json, sys
from shardex.tools.loadgen import LoadConfig, run
rep = run(LoadConfig(endpoint=sys.argv[1], duration=60.0, procs=2, window=2, batch=10,
                     key=sys.argv[2]))
print(json.dumps(rep.to_dict()), flush=True)
"""


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupt_returns_the_partial_report(cluster: Cluster, how: str) -> None:
    def commands() -> int:
        with cluster.client() as c:
            return sum(s.get("commands") or 0 for s in c.status())

    before = commands()  # (the cluster is shared: what the tests before it sent)
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, cluster.endpoint, str(cluster.key)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        cwd=ROOT,
    )
    try:
        # interrupted once it is sending (and acknowledged)
        wait_until(lambda: commands() >= before + 200, 30, "loadgen sending")
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # the terminal sends it to the whole group
        else:
            proc.send_signal(signal.SIGTERM)  # to the parent only
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err, err.decode()
    d = json.loads(out)
    assert d["interrupted"] is True and d["sent"] > 0 and d["acked"] > 0
    assert d["seconds"] < 60 and d["config"]["duration"] == 60.0


def test_loadgen_without_the_clusters_key_is_one_clear_error(cluster: Cluster) -> None:
    with pytest.raises(LoadError, match="handshake failed"):
        run(LoadConfig(endpoint=cluster.endpoint, orders=10, duration=None, key="none"))
    with pytest.raises(LoadError, match="not found"):
        LoadConfig(endpoint=cluster.endpoint, key=str(Path(cluster.data_dir) / "nope.key"))


def test_fill_counter_counts_this_runs_orders_and_repairs_what_it_missed() -> None:
    from shardex.engine.codes import EV_ACCEPTED, EV_CANCELLED, EV_REJECTED, EV_TRADE
    from shardex.tools.fills import FillCounter

    c = FillCounter("lgx-", {0: 10, 1: 0})
    c.feed(0, [(EV_ACCEPTED, 9, "BTC-USD", "lgx-1")])  # before the run: ignored
    c.feed(0, [(EV_ACCEPTED, 11, "BTC-USD", "lgx-1"), (EV_ACCEPTED, 12, "BTC-USD", "other-1"),
               (EV_TRADE, 13, "BTC-USD", 5, 1, "lgx-2", "lgx-1", 0, 1),
               (EV_TRADE, 15, "BTC-USD", 5, 1, "other-2", "other-1", 0, 3)])  # fmt: skip
    # a batch is one message per symbol: seq 14 comes after 15, in another symbol's message
    c.feed(0, [(EV_TRADE, 14, "ETH-USD", 5, 1, "lgx-3", "other-1", 0, 2)])
    c.feed(0, [(EV_TRADE, 13, "BTC-USD", 5, 1, "lgx-2", "lgx-1", 0, 1)])  # a repeat: ignored
    assert c.next[0] == 16 and not c.ahead[0]
    c.feed(1, [(EV_CANCELLED, 3, "ETH-USD", "lgx-4", "ioc", 1),  # seqs 1, 2 not seen (yet)
               (EV_REJECTED, 4, "ETH-USD", "lgx-5", "why", 10)])  # fmt: skip
    c.feed(7, [(EV_ACCEPTED, 1, "X", "lgx-9")])  # a shard it was not told of: ignored
    assert (c.accepted, c.trades, c.fills, c.cancelled) == (1, 2, 3, 1)
    assert c.rejected == {"amend_increase": 1}  # by code (10), never by its text
    assert c.behind({0: 17, 1: 4}) == 4 and c.lost == 0
    c.close({0: 17, 1: 4})
    assert c.holes == [(0, 16, 17), (1, 1, 2)] and c.lost == 4
    # the range re-send fills a hole, in parts; events outside it or out of order are not counted
    assert c.repair(1, [(EV_ACCEPTED, 1, "ETH-USD", "lgx-6"), (EV_ACCEPTED, 5, "E", "lgx-7")])
    assert c.holes[1] == (1, 2, 2) and c.accepted == 2
    assert c.repair(1, [(EV_TRADE, 2, "ETH-USD", 5, 1, "lgx-8", "lgx-9", 1, 4)])
    assert not c.repair(0, [])  # nothing came: stop asking
    assert (c.trades, c.fills, c.lost, c.repaired) == (3, 5, 2, 2)
    assert c.report()["events_lost"] == 2


def test_loadgen_frames_are_the_sdk_plan() -> None:
    """loadgen routes and groups with the SDK core (``ClientCore.route``/``plan``), not its own
    copy: with the account tier every new/amend goes to its account's shard, one frame per
    account shard keyed ``%j`` (``by_shard``), cancels and fate queries by symbol, and fate
    queries of the account tier's step to the account's shard."""
    cfg = LoadConfig(endpoint=EP, risk="on", account_shards=3, mix="limit=3,cancel=1,amend=1")
    core = sdk_core(cfg, DEFAULT_MARKETS, 4)
    cmds = Workload(["BTC-USD", "ETH-USD"], seed=5, shadow=False, prefix="p-").take(400)
    frames = core.plan(cmds, len(cmds), by_shard=True)
    assert sorted(i for _, _, idx in frames for i in idx) == list(range(len(cmds)))
    for slot, key, idx in frames:
        for i in idx:
            c = cmds[i]
            if c[0] in (OP_NEW, OP_AMEND):
                j = account_shard_for(c[3], 3)
                assert (slot, key) == (4 + j, f"%{j}".encode())
            else:
                assert slot == shard_for(c[1], 4) and key == cmds[idx[0]][1].encode()
    assert len(frames) == len({slot for slot, _, _ in frames})  # one frame per slot
    assert {slot for slot, _, _ in frames} >= {4, 5, 6}
    query = (OP_ORDER, "ETH-USD", "acct-7", "p-1")
    j = account_shard_for("acct-7", 3)
    assert core.plan([query], 1, True, True) == [(4 + j, f"%{j}".encode(), [0])]
    assert core.plan([query], 1, False, True) == [(shard_for("ETH-USD", 4), b"ETH-USD", [0])]
    off = sdk_core(LoadConfig(endpoint=EP, risk="off"), DEFAULT_MARKETS, 4)
    assert {s for s, _, _ in off.plan(cmds, 100, by_shard=True)} <= {0, 1, 2, 3}


def test_a_one_command_plan_routes_like_the_grouping_path() -> None:
    """``plan`` of one command takes a short path (loadgen's default one-order frames spent
    ~20 µs per order in the grouping tables, ~15 % of its saturation on a 2-core box): for every
    kind of command, with the account tier on and off, ``by_shard`` and ``via_accounts`` either
    way, it routes exactly as the grouping path does for the same command (sent twice, one
    frame)."""
    cmds = Workload(["BTC-USD", "ETH-USD"], seed=7, shadow=False, prefix="q-").take(300)
    cmds += [(OP_ORDER, "ETH-USD", "acct-7", "q-1"), (OP_ORDER, "BTC-USD", 5, "q-2"), ()]
    for risk in ("on", "off"):
        core = sdk_core(LoadConfig(endpoint=EP, risk=risk, account_shards=3), DEFAULT_MARKETS, 4)
        for by_shard in (False, True):
            for via in (False, True):
                for c in cmds:
                    grouped = core.plan([c, c], 2, via, by_shard)
                    assert len(grouped) == 1, (c, grouped)
                    slot, key, idx = grouped[0]
                    assert idx == [0, 1]
                    assert core.plan([c], 1, via, by_shard) == [(slot, key, [0])], c
    rejected = (OP_REJECT, "BTC-USD", "q-3", "malformed")
    assert core.plan([rejected], 1) == [] == core.plan([rejected, rejected], 2)

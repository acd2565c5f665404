"""The pure parts of ``shardex reshard`` changing the engine shard process count: the map over
a new count (``placement.scale``), the supervisor's control requests (``scalectl``,
``node.scaler``), the router's slots following the map (``node.router_resize``) and the shard
core taking a map of another count (in-process: no process is started)."""

from __future__ import annotations

import json
import os

import pytest

from shardex import endpoints
from shardex.cli.up import _shard_count
from shardex.engine.markets import DEFAULT_MARKETS
from shardex.layout import Layout
from shardex.node.router import Router, RouterConfig
from shardex.node.scaler import Scaler
from shardex.node.shard_core import ShardCore
from shardex.node.supervisor import Child, Supervisor
from shardex.placement import default_owner, initial
from shardex.placement.core import PlacementMap
from shardex.placement.scale import ScaleError, grown, shrunk
from shardex.placement.store import DirStore
from shardex.scalectl import (
    REQUEST_FILE,
    STATE_FILE,
    ControlError,
    parse_request,
    read_state,
    trusted,
    write,
)
from shardex.tools.scale import not_supervised, supervisor_of, unsettled
from shardex.wire.protocol import OP_HELLO, packb

PAIRS = sorted(DEFAULT_MARKETS)


def test_grown_pins_every_pair_where_it_is_and_shrunk_needs_the_moves_done() -> None:
    one = PlacementMap(4, 1)
    three = grown(one, PAIRS, 3)
    assert (three.version, three.shards) == (5, 3)
    assert {s: three.owner(s) for s in PAIRS} == dict.fromkeys(PAIRS, 0)  # nobody moved yet
    assert grown(three, PAIRS, 3) is three and grown(three, PAIRS, 2) is three  # re-run: no step
    with pytest.raises(ScaleError, match="still on shards that would stop"):
        shrunk(three.with_pin(PAIRS[0], 2), PAIRS, 1)
    with pytest.raises(ScaleError, match="in progress"):
        shrunk(three.with_moving({PAIRS[0]: (0, 1)}), PAIRS, 1)
    spread = PlacementMap(9, 3, {s: default_owner(s, 2) for s in PAIRS})  # after reshard to 2
    two = shrunk(spread, PAIRS, 2)
    assert two.shards == 2 and not two.pins  # every pair at its default over 2: no pin left
    assert {s: two.owner(s) for s in PAIRS} == {s: spread.owner(s) for s in PAIRS}
    assert shrunk(two, PAIRS, 2) is two


def test_control_requests_parse_or_get_a_stable_code(tmp_path) -> None:
    ok = parse_request(json.dumps({"format": 1, "id": "ab12", "op": "shards", "shards": 3}), 100)
    assert (ok.op, ok.shards) == ("shards", 3)
    restart = b'{"format":1,"id":"x","op":"restart","name":"bridge"}'
    assert parse_request(restart, 100).name == "bridge"
    bad = [b"", b"not json", b"[]", b'{"format":2,"id":"a","op":"shards","shards":1}',
           b'{"format":1,"id":"a b","op":"shards","shards":1}',
           b'{"format":1,"id":"a","op":"shards","shards":0}',
           b'{"format":1,"id":"a","op":"shards","shards":1.5}',
           b'{"format":1,"id":"a","op":"shards","shards":101}',
           b'{"format":1,"id":"a","op":"restart","name":"router"}',
           b'{"format":1,"id":"a","op":"rm"}', b"{" * 5000]  # fmt: skip
    for text in bad:
        with pytest.raises(ControlError) as exc:
            parse_request(text, 100)
        assert exc.value.code == "bad_request", text
    path = tmp_path / "r.json"
    write(path, {"a": 1})
    assert trusted(path)
    os.chmod(path, 0o666)
    assert not trusted(path)  # writable by others: never acted on


def _scaler(tmp_path, children: list[Child], refusal: str | None = None) -> Scaler:
    return Scaler(Supervisor(children), tmp_path, 1, lambda n: children, lambda n: None, refusal)


def _ask(scaler: Scaler, tmp_path, body: dict) -> dict:
    write(tmp_path / REQUEST_FILE, {"format": 1, **body})
    scaler._next = 0.0
    scaler.tick()
    state = read_state(tmp_path)
    assert state is not None and state["id"] == body.get("id", "")
    return state


def test_the_supervisor_answers_every_request_and_refuses_without_changing_anything(
    tmp_path,
) -> None:
    bridge = Child("bridge", ["true"])
    sc = _scaler(tmp_path, [Child("router", ["true"]), bridge])
    assert _ask(sc, tmp_path, {"id": "a1", "op": "shards", "shards": 0})["code"] == "bad_request"
    no_map = _ask(sc, tmp_path, {"id": "a2", "op": "shards", "shards": 2})
    assert (no_map["state"], no_map["code"]) == ("failed", "placement")  # map not over 2 yet
    DirStore(tmp_path).compare_and_set(None, initial(3))
    assert _ask(sc, tmp_path, {"id": "a3", "op": "shards", "shards": 2})["code"] == "placement"
    assert len(sc.sup.children) == 2 and sc.shards == 1
    done = _ask(sc, tmp_path, {"id": "a4", "op": "restart", "name": "bridge"})
    assert done["state"] == "done" and bridge.proc is None  # (the loop starts it again)
    os.chmod(tmp_path / REQUEST_FILE, 0o622)
    write(tmp_path / REQUEST_FILE, {"format": 1, "id": "a5", "op": "restart", "name": "bridge"})
    os.chmod(tmp_path / REQUEST_FILE, 0o622)
    sc._next = 0.0
    sc.tick()
    assert read_state(tmp_path)["code"] == "untrusted"
    refused = _scaler(tmp_path, [], "with the account tier ...")
    assert _ask(refused, tmp_path, {"id": "a6", "op": "shards", "shards": 2})["code"] == (
        "unsupported")  # fmt: skip
    assert _ask(refused, tmp_path, {"id": "a7", "op": "restart", "name": "bridge"})["code"] == (
        "no_child")  # fmt: skip
    (tmp_path / STATE_FILE).write_text(json.dumps({"id": "a7"}))
    again = _scaler(tmp_path, [])  # a restarted supervisor does not redo the answered request
    again.tick()
    assert read_state(tmp_path) == {"id": "a7"}


def test_a_request_a_killed_supervisor_left_unanswered_is_not_carried_out_by_the_next(
    tmp_path,
) -> None:
    """``shardex up`` killed -9 after ``reshard`` wrote its request and before it answered: the
    restarted supervisor (started with its own count) answers it ``stale`` and changes no
    process; a new request is carried out."""
    DirStore(tmp_path).compare_and_set(None, initial(2))
    write(tmp_path / REQUEST_FILE, {"format": 1, "id": "old1", "op": "shards", "shards": 2})
    children = [Child("router", ["true"])]
    started: list[int] = []
    sc = Scaler(Supervisor(children), tmp_path, 1, lambda n: started.append(n) or children,
                lambda n: None)  # fmt: skip
    sc.tick()
    assert started == [] and sc.shards == 1
    assert {k: read_state(tmp_path)[k] for k in ("id", "state", "code")} == {
        "id": "old1", "state": "failed", "code": "stale"}  # fmt: skip
    assert _ask(sc, tmp_path, {"id": "new1", "op": "shards", "shards": 2})["state"] == "done"
    assert started == [2] and sc.shards == 2


def _hello(shard: int, shards: int, placement: PlacementMap, pid: int) -> list[bytes]:
    info = {"shard": shard, "shards": shards, "pid": pid, "placement": placement.to_wire()}
    return [f"shard-{shard}".encode(), b"", b"HELLO", packb((OP_HELLO, info))]


# the router's per-slot lists (``router_resize``): each one's length is the slot count
_PER_SLOT = (
    "forwarded", "shard_inflight", "shard_bytes", "skipped", "batch_bytes", "served", "codel",
    "rates", "caps", "ack_time", "batches", "identities", "route_ids",
)  # fmt: skip


def test_the_router_slots_follow_the_newest_map_and_a_stopped_shard_stays_out() -> None:
    r = Router(1, RouterConfig(1, "", ""))
    r.from_shard(_hello(0, 1, PlacementMap(1, 1), 10), 0.0)
    v2 = grown(PlacementMap(1, 1), PAIRS, 3)
    r.from_shard(_hello(2, 3, v2, 12), 0.1)  # a new shard's HELLO brings the grown map
    assert r.shards == r.slots == 3 and r.placement == v2
    r.from_shard(_hello(1, 3, v2, 11), 0.2)
    r.from_shard(_hello(0, 1, PlacementMap(1, 1), 10), 0.3)  # started with 1: still serves
    assert {t.get("pid") for t in r.info(0.4)["topology"]} == {10, 11, 12}
    assert all(len(getattr(r, name)) == 3 for name in _PER_SLOT)  # every list grew ...
    req = [b"c", b"#2", b"r1", b"(the router never decodes a payload)"]
    assert r.from_client(req, 0.45) == (2, None)  # ... so a new slot's request is admitted
    assert all(r.shard_index_for(s.encode()) == 0 for s in PAIRS)  # pinned where they are
    v3 = PlacementMap(v2.version + 1, 1)
    r.from_shard(_hello(0, 1, v3, 10), 0.5)  # the shrunk map
    assert r.shards == 1 and len(r.info(0.6)["topology"]) == 1
    assert all(len(getattr(r, name)) == 1 for name in _PER_SLOT)
    r.from_shard(_hello(2, 3, v2, 12), 0.7)  # a late HELLO of a stopped shard: ignored
    assert r.shards == 1 and r.shard_index_for(b"#2") is None
    fixed = Router(1, RouterConfig(1, "", "", accounts=1))  # account tier: the count is fixed
    fixed.from_shard(_hello(1, 2, PlacementMap(5, 2), 11), 0.0)
    assert fixed.shards == 1 and 1 not in fixed.topology


def test_a_shard_takes_a_map_of_another_count_that_still_has_it() -> None:
    """Also with the account tier (a grow under shardex up restarts the account shards and
    routers; the engine shards take the grown map live and journal it for their check of
    forwards); never a map without the shard itself."""
    core = ShardCore(0, 1, DEFAULT_MARKETS)
    core.set_placement(grown(PlacementMap(1, 1), PAIRS, 3))
    assert core.shards == 3 and core.owner("BTC-USD") == 0
    tier = ShardCore(0, 1, DEFAULT_MARKETS)
    tier.accounts = 1
    tier.set_placement(grown(PlacementMap(1, 1), PAIRS, 2))
    assert tier.shards == 2 and tier.owner("BTC-USD") == 0
    with pytest.raises(ValueError):
        ShardCore(2, 3, DEFAULT_MARKETS).set_placement(PlacementMap(9, 2))  # index 2 of 2


def test_reshard_finds_the_shardex_up_that_runs_the_router_or_none(tmp_path) -> None:
    lay = Layout("127.0.0.1", 63500, 2)
    assert supervisor_of(tmp_path, lay.frontend) is None  # no endpoints file: not shardex up
    endpoints.write(tmp_path, endpoints.record(lay, pid=os.getpid(), now=0.0))
    sup = supervisor_of(tmp_path, lay.frontend)
    assert sup is not None and (sup.pid, sup.shards, sup.bridge) == (os.getpid(), 2, False)
    assert supervisor_of(tmp_path, "tcp://127.0.0.1:1") is None  # another cluster's router
    endpoints.mark_stopped(tmp_path, os.getpid())
    assert supervisor_of(tmp_path, lay.frontend) is None  # stopped
    assert "not started by shardex up" in not_supervised(3, 1)
    endpoints.write(tmp_path, endpoints.record(lay, replicas=2, pid=os.getpid(), now=0.0))
    replicated = supervisor_of(tmp_path, lay.frontend)
    assert replicated is not None and replicated.replicas == 2


def test_a_plain_shardex_up_starts_the_count_its_data_dir_last_ran(tmp_path) -> None:
    auto = _shard_count("auto", str(tmp_path / "none"), False)
    assert auto == _shard_count("auto", str(tmp_path), False)  # nothing recorded: the cores
    write(tmp_path / "shards.json", {"shards": 3})  # what shardex up / reshard record
    assert _shard_count("auto", str(tmp_path), False) == 3
    assert _shard_count("2", str(tmp_path), False) == 2  # given: as given (checked at start)
    assert _shard_count("auto", str(tmp_path), True) == auto  # --ephemeral: no data dir


def test_a_shrink_with_the_account_tier_stops_the_emptied_shard_and_relinks(tmp_path) -> None:
    def children_for(n: int) -> list[Child]:
        names = ["router", *(f"engine.{i}" for i in range(n)), "accounts.0"]
        return [Child(name, ["sleep", "30"]) for name in names]

    sup = Supervisor(children_for(2))
    for c in sup.children:
        c.start()
    sized: list[int] = []
    relink = lambda name: name.startswith(("accounts.", "router"))  # noqa: E731 (as up's)
    sc = Scaler(sup, tmp_path, 2, children_for, sized.append, None, relink)
    try:
        DirStore(tmp_path).compare_and_set(None, initial(1))
        done = _ask(sc, tmp_path, {"id": "s1", "op": "shards", "shards": 1})
        assert (done["state"], done["shards"], sized) == ("done", 1, [1]), done
        by = {c.name: c for c in sup.children}
        assert sorted(by) == ["accounts.0", "engine.0", "router"]
        assert by["engine.0"].proc is not None and by["engine.0"].proc.poll() is None
        assert by["accounts.0"].proc is None and by["router"].proc is None  # (restarted next)
        assert json.loads((tmp_path / "shards.json").read_text()) == {"shards": 1}
    finally:
        sup.shutdown()


def test_unsettled_names_what_still_flows_to_a_shard_about_to_stop() -> None:
    acc = {"outbox": {1: 7}, "inbox": {1: 5}}
    eng = {"shard": 1, "link_in": {0: 6}, "link_out": {0: 5}}
    assert unsettled([eng], [acc]) == ["forwards a0->e1: 6 of 7 applied"]
    assert unsettled([{**eng, "link_in": {"0": 7}}], [acc]) == []  # (keys as strings too)
    assert unsettled([{**eng, "link_in": {0: 7}, "link_out": {0: 6}}], [acc]) == [
        "settlements e1->a0: 5 of 6 applied"]  # fmt: skip
    idle = {"shard": 1, "link_in": {}, "link_out": {}}
    assert unsettled([idle], [{"outbox": {}, "inbox": {}}]) == []  # (a link never used)
    down = unsettled([{"shard": 1, "error": "timeout"}], [acc])
    assert down == ["engine shard 1: no link status (timeout)"]


def test_with_replicas_a_grow_starts_and_a_shrink_stops_both_processes_of_a_shard(
    tmp_path,
) -> None:
    def children_for(n: int) -> list[Child]:
        names = ["router", *(f"engine.{i}{r}" for i in range(n) for r in ("", ".r1"))]
        return [Child(name, ["sleep", "30"]) for name in names]

    sup = Supervisor(children_for(1))
    for c in sup.children:
        c.start()
    sc = Scaler(sup, tmp_path, 1, children_for, lambda n: None)
    try:
        DirStore(tmp_path).compare_and_set(None, initial(2))
        assert _ask(sc, tmp_path, {"id": "g1", "op": "shards", "shards": 2})["state"] == "done"
        started = {c.name: c.proc for c in sup.children}
        assert sorted(started) == ["engine.0", "engine.0.r1", "engine.1", "engine.1.r1", "router"]
        assert all(p is not None and p.poll() is None for p in started.values())
        v = initial(2).version  # (the moves emptied shard 1: a map over 1 follows)
        assert DirStore(tmp_path).compare_and_set(v, PlacementMap(v + 1, 1))
        assert _ask(sc, tmp_path, {"id": "s1", "op": "shards", "shards": 1})["state"] == "done"
        assert sorted(c.name for c in sup.children) == ["engine.0", "engine.0.r1", "router"]
        assert started["engine.1"].poll() is not None and started["engine.1.r1"].poll() is not None
    finally:
        sup.shutdown()

"""Exchange time (``shardex.timemarks``): every batch a shard journals starts with ``(OP_TIME,
ts)``, ts in ms since the Unix epoch, read once per batch from the node's clock and never going
backwards; the pure machines receive it only as that command; replay and snapshots reproduce
it; events carry it per batch (PUB messages, range re-sends) and as ``"ts"`` in their JSON."""

from __future__ import annotations

from pathlib import Path

from shardex.accounts.machines import AccountMachineFactory
from shardex.clock import VIRTUAL_EPOCH, VirtualClock
from shardex.engine import Engine
from shardex.engine.codes import EV_REJECTED, OP_TIME, REJ_UNKNOWN_OP
from shardex.engine.markets import DEFAULT_MARKETS
from shardex.journal import Journal
from shardex.journal.records import read_commands
from shardex.node.shard_core import ShardCore
from shardex.sim.faults import SAFE_SKEW, Faults
from shardex.sim.invariants import time_forward
from shardex.sim.state import ClusterState, EngineShard
from shardex.sim.worldrun import CheckedWorld
from shardex.timemarks import (
    TimeMarks,
    check_runs,
    next_ts,
    runs_of,
    time_command,
    ts_at,
    wall_ms,
)
from shardex.tools.replay import replay_journal
from shardex.wire.account_events import account_event_to_json
from shardex.wire.protocol import (
    OP_EVENTS,
    decode_reply,
    edge_command,
    encode_request,
    event_to_json,
    shard_for,
)
from shardex.wire.pub import decode_stamped, encode_events

MARKETS = {"BTC-USD": DEFAULT_MARKETS["BTC-USD"]}


def _new(oid: str, side: int, price: int, account: str = "a") -> tuple:
    return (1, "BTC-USD", oid, account, side, 0, price, 1000, 0, False, 0)


# -- the marks ---------------------------------------------------------------------------------


def test_marks_map_each_seq_to_the_time_of_its_batch() -> None:
    m = TimeMarks()
    m.mark(1, 100)
    m.mark(4, 100)  # (same time: no new mark)
    m.mark(6, 250)
    m.mark(6, 300)  # (a batch that emitted nothing: the next one's mark replaces it)
    assert (m.seqs, m.tss) == ([1, 6], [100, 300])
    assert [m.at(s) for s in (0, 1, 5, 6, 99)] == [None, 100, 100, 300, 300]
    assert m.runs(3, 9) == [[3, 100], [6, 300]]
    assert m.runs(0, 3) is None
    m.prune(7)
    assert m.snapshot() == [[6, 300]] and m.at(7) == 300


def test_runs_of_cuts_events_where_the_time_changes() -> None:
    m = TimeMarks([(1, 10), (3, 20)])
    evs = [(0, s) for s in range(1, 6)]
    assert runs_of(evs, m, 0) == [(10, evs[:2]), (20, evs[2:])]
    assert runs_of(evs[2:], m, 0) == [(20, evs[2:])]
    assert runs_of([(0, 9)], TimeMarks(), 7) == [(7, [(0, 9)])]
    assert runs_of([], m, 0) == []


def test_a_peers_marks_are_checked_and_applied_by_seq() -> None:
    assert check_runs(((5, 1), (7, 2))) == [[5, 1], [7, 2]]
    for bad in (None, [], [[5, 1], [5, 2]], [[5, -1]], [["5", 1]], [[1, 2, 3]], "x", [[1, True]]):
        assert check_runs(bad) is None, bad
    runs = [[5, 100], [8, 200]]
    assert [ts_at(runs, s) for s in (4, 5, 7, 8, 50)] == [0, 100, 100, 200, 200]


def test_time_never_goes_backwards_and_is_whole_ms_of_the_wall_clock() -> None:
    clock = VirtualClock()
    assert wall_ms(clock) == int(VIRTUAL_EPOCH * 1000)
    assert next_ts(5, 9) == 9 and next_ts(10, 9) == 10


# -- the pure machines --------------------------------------------------------------------------


def test_the_engine_takes_time_as_a_command_without_an_event_or_a_seq() -> None:
    e = Engine(MARKETS)
    out: list = []
    e.apply(time_command(1_000), out)
    e.apply(_new("x", 0, 100), out)
    e.apply(time_command(900), out)  # (older: ignored, time never goes back)
    e.apply((OP_TIME, "soon"), out)  # (not an int: ignored)
    assert (e.seq, len(out), e.ts) == (1, 1, 1_000)
    restored = Engine.restore(e.snapshot(), MARKETS)
    assert restored.ts == 1_000
    old = e.snapshot()
    del old["ts"]  # a snapshot written before exchange time existed
    assert Engine.restore(old, MARKETS).ts == 0


def test_a_client_cannot_send_the_time() -> None:
    cmd = edge_command((OP_TIME, 5))
    e = Engine(MARKETS)
    out: list = []
    e.apply(cmd, out)
    assert out[0][0] == EV_REJECTED and out[0][-1] == REJ_UNKNOWN_OP and e.ts == 0


def test_the_account_machine_takes_time_and_keeps_it_in_snapshots() -> None:
    factory = AccountMachineFactory(0, 1, lambda s: 0)
    m = factory.new(MARKETS)
    out: list = []
    m.apply(time_command(7_000), out)
    m.apply((1, "a", "USD", 100, "r1"), out)  # a deposit: one balance event
    assert out and m.ts == 7_000 and m.times.at(out[0][1]) == 7_000
    back = factory.restore(m.snapshot(), MARKETS)
    assert back.ts == 7_000 and back.times.at(out[0][1]) == 7_000
    obj = account_event_to_json(out[0], m.core.table, MARKETS, 7_000)
    assert obj["ts"] == 7_000


# -- the leader's core: one stamp per batch, journaled, in re-sends ----------------------------


def _core(tmp_path: Path, clock: VirtualClock) -> ShardCore:
    journal = Journal(tmp_path, MARKETS)
    core = ShardCore(shard_for("BTC-USD", 1), 1, MARKETS, journal=journal)
    core.set_wall(lambda: wall_ms(clock))
    return core


def _batch(core: ShardCore, cmds: list[tuple]) -> list:
    out: list = []
    core.handle(encode_request(cmds), out, {})
    core.journal.commit()
    core.new_batch()  # (what the node's group commit does)
    return out


def test_each_batch_is_stamped_once_journaled_and_replayed(tmp_path: Path) -> None:
    clock = VirtualClock()
    core = _core(tmp_path, clock)
    first = _batch(core, [_new("b1", 0, 100), _new("s1", 1, 100)])
    clock.advance(0.5)
    second = _batch(core, [_new("b2", 0, 101)])
    t0 = int(VIRTUAL_EPOCH * 1000)
    cmds = [c for _, c in read_commands(tmp_path)]
    assert [c for c in cmds if c[0] == OP_TIME] == [(OP_TIME, t0), (OP_TIME, t0 + 500)]
    assert cmds[0] == (OP_TIME, t0) and cmds[3] == (OP_TIME, t0 + 500)  # (heads of batches)
    assert {core.times.at(ev[1]) for ev in first} == {t0}
    assert {core.times.at(ev[1]) for ev in second} == {t0 + 500}
    core.journal.close()
    lines: list[str] = []
    replay_journal(tmp_path, MARKETS, lines.append)
    printed = [line for line in lines if line != "\n"]
    assert len(printed) == len(first) + len(second)
    assert all(f'"ts":{t0}' in line for line in printed[: len(first)])
    assert all(f'"ts":{t0 + 500}' in line for line in printed[len(first) :])
    again = Journal(tmp_path, MARKETS).recover().engine
    assert again.ts == t0 + 500 and again.seq == core.engine.seq


def test_a_clock_stepped_back_does_not_move_time_back(tmp_path: Path) -> None:
    clock = VirtualClock(start=10.0)
    core = _core(tmp_path, clock)
    _batch(core, [_new("b1", 0, 100)])
    clock.epoch -= 5  # (the wall clock stepped back five seconds)
    _batch(core, [_new("b2", 0, 100)])
    stamps = [c[1] for _, c in read_commands(tmp_path) if c[0] == OP_TIME]
    assert stamps == [int((VIRTUAL_EPOCH + 10) * 1000)] * 2


def test_range_resends_carry_the_marks_from_the_ring_and_the_journal(tmp_path: Path) -> None:
    clock = VirtualClock()
    core = _core(tmp_path, clock)
    evs = _batch(core, [_new("b1", 0, 100)])
    core.ring.extend(evs)
    clock.advance(1)
    evs2 = _batch(core, [_new("s1", 1, 100)])
    core.ring.extend(evs2)
    t0 = int(VIRTUAL_EPOCH * 1000)
    want = [[1, t0], [len(evs) + 1, t0 + 1000]]
    _, (res,) = decode_reply(core.handle(encode_request([(OP_EVENTS, 1, core.engine.seq)]), [], {}))
    assert [list(r) for r in res["ts"]] == want
    core.ring = type(core.ring)(16)  # (a ring that no longer holds them: the journal's turn)
    core.times = TimeMarks()
    _, (res,) = decode_reply(core.handle(encode_request([(OP_EVENTS, 1, core.engine.seq)]), [], {}))
    assert [list(r) for r in res["ts"]] == want and len(res["events"]) == core.engine.seq


def test_a_journal_of_the_format_before_exchange_time_recovers_with_time_zero(
    tmp_path: Path,
) -> None:
    """Records without an ``OP_TIME`` (every journal written before it existed): their events
    have time 0, and the first batch a leader journals after them is stamped from its clock."""
    old = Journal(tmp_path, MARKETS)
    e = Engine(MARKETS)
    for cmd in (_new("b1", 0, 100), _new("s1", 1, 100)):
        seq = e.seq
        e.apply(cmd, [])
        old.add(seq, cmd)
    old.commit()
    old.close()
    lines: list[str] = []
    replay_journal(tmp_path, MARKETS, lines.append)
    assert all('"ts":0' in line for line in lines if line != "\n")
    engine = Journal(tmp_path, MARKETS).recover().engine
    assert (engine.seq, engine.ts) == (e.seq, 0)
    clock = VirtualClock()
    core = ShardCore(shard_for("BTC-USD", 1), 1, MARKETS, engine=engine,
                     journal=Journal(tmp_path, MARKETS))  # fmt: skip
    core.set_wall(lambda: wall_ms(clock))
    _batch(core, [_new("b2", 0, 99)])
    assert core.engine.ts == int(VIRTUAL_EPOCH * 1000)


# -- the wire --------------------------------------------------------------------------------


def test_pub_messages_carry_the_time_and_older_forms_still_decode() -> None:
    ev = (0, 1, "BTC-USD", "x")
    assert decode_stamped(encode_events(0, [ev], None, 5)) == (0, (ev,), None, 5)
    assert decode_stamped(encode_events(0, [ev], 3, 5)) == (0, (ev,), 3, 5)
    assert decode_stamped(encode_events(0, [ev], 3)) == (0, (ev,), 3, None)
    assert decode_stamped(encode_events(0, [ev])) == (0, (ev,), None, None)
    assert event_to_json(ev, MARKETS, 5)["ts"] == 5 and "ts" not in event_to_json(ev, MARKETS)


# -- the simulator's check ------------------------------------------------------------------


def test_the_simulator_catches_time_going_back_or_a_replay_that_differs() -> None:
    def state(times: list, replayed: list | None) -> ClusterState:
        shard = EngineShard(shard=0, node="engine-0", seq=9, books={}, times=times,
                            replayed_times=replayed)  # fmt: skip
        return ClusterState(engines=[shard])

    assert time_forward(state([[1, 10], [5, 20]], [[1, 10], [5, 20]])) == []
    assert time_forward(state([[3, 10], [5, 20]], [[1, 7], [3, 10], [5, 20]])) == []
    back = time_forward(state([[1, 10], [5, 9]], None))
    assert [v.check for v in back] == ["time_forward"] and "backwards" in back[0].message
    differ = time_forward(state([[1, 10], [5, 20]], [[1, 10], [6, 20]]))
    assert len(differ) == 1 and "(5, 20, 10)" in differ[0].message


def test_wall_clocks_stepping_back_and_crashes_never_move_a_shards_time_back() -> None:
    """A simulated run whose nodes' wall clocks are stepped (back too) while engine and account
    shards crash and recover, its bridge writing the streams: every final check holds,
    ``time_forward`` among them (each shard's time never goes back, and its journal replays
    the time it gave every event) and ``stream_exact`` (each entry with that time). Seed 10:
    with leaders that take the clock as it reads (no ``max``), both checks fire."""
    faults = Faults(skew=SAFE_SKEW, step_per_s=8.0, crash_per_s=3.0, down_s=(0.05, 0.2),
                    crashable=("engine", "accounts"))  # fmt: skip
    world = CheckedWorld(10, {"shards": 1, "accounts": 1}, faults, bridge=True)
    r = world.run(1.0)
    assert r.counts["step"] > 0 and r.counts["crash"] > 0, r.counts
    assert world.monitor.violations == [] and not r.violations, r.violations

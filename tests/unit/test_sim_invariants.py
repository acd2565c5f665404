"""The simulator's invariants (``shardex.sim.invariants``) on a real whole cluster in one
process (``shardex.inproc``, real time, no faults): its state passes every check; and each
check fires, with a readable message, on a copy of that state doctored the way the bug it
guards against would leave it."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable

import pytest

from shardex.accounts.assets import AssetTable
from shardex.client import audit_report
from shardex.engine.codes import EV_ACCEPTED
from shardex.inproc import InProcCluster
from shardex.node.bridge.entries import BALANCE_KINDS, EntryFormatter
from shardex.sim import invariants as inv
from shardex.sim.extract import cluster_state, orders_of
from shardex.timemarks import TimeMarks
from tests.support.inproc import plan

pytestmark = pytest.mark.timeout(60)
ACCOUNTS = ("al", "bo", "cy", "di")


async def _trade(cluster: InProcCluster) -> list[inv.Order]:
    """Fund four accounts, cross some orders, cancel one; wait until everything settled."""
    async with cluster.client(timeout=5) as c:
        for a in ACCOUNTS:
            assert (await c.deposit(a, "USD", "10000", ref=f"{a}-usd")).ok
            assert (await c.deposit(a, "BTC", "10", ref=f"{a}-btc")).ok
        cmds = [c.order("BTC-USD", ("buy", "sell")[k % 2], "0.5", str(99 + k % 4),
                        account=ACCOUNTS[k % 4], id=f"o{k}") for k in range(24)]  # fmt: skip
        results = await c.submit_many(cmds, batch=8, window=2)
        results += await c.submit_many([c.order("BTC-USD", "buy", "0.1", "50", account="al",
                                                id="rest")])  # fmt: skip
        assert (await c.cancel("BTC-USD", "o0", account="al")).ok or True  # (may have filled)

        async def settled() -> bool:
            return not await c.audit_orders() and audit_report(await c.audit())[1]

        await cluster.until(settled, what="every settlement")
        return orders_of("c1", results)


async def _direct(cluster: InProcCluster) -> list[inv.Order]:
    """Without the account tier: orders acked by the engine itself."""
    async with cluster.client(timeout=5, account="x") as c:
        cmds = [c.order("BTC-USD", ("buy", "sell")[k % 2], "1", str(100 + k % 3), id=f"d{k}")
                for k in range(12)]  # fmt: skip
        return orders_of("c2", await c.submit_many(cmds))


def _state(p, body: Callable) -> inv.ClusterState:
    async def main() -> inv.ClusterState:
        async with InProcCluster(p) as cluster:
            orders = await body(cluster)
            return cluster_state(cluster, orders)

    return asyncio.run(main())


def _with_streams(s: inv.ClusterState) -> inv.ClusterState:
    """The streams a correct bridge would have written for ``s`` (no Redis in unit tests)."""
    fmt = EntryFormatter(s.markets, AssetTable(s.markets))
    at = {n.node: TimeMarks(n.times or ()).at for n in (*s.engines, *s.accounts)}  # their time
    assert all(n.times for n in (*s.engines, *s.accounts) if n.seq)  # (known from seq 1 on)
    s.streams = {f"shardex:events:{e.shard}": [fmt.item(ev, e.shard, at[e.node](ev[1]))[:2]
                                               for ev in e.events]
                 for e in s.engines}  # fmt: skip
    for a in s.accounts:
        s.streams[f"shardex:balances:{a.shard}"] = [
            fmt.balance_item(ev, a.shard, at[a.node](ev[1]))
            for ev in a.events if ev[0] in BALANCE_KINDS
        ]  # fmt: skip
    return s


@pytest.fixture(scope="module")
def accounts_state(tmp_path_factory) -> inv.ClusterState:
    data = tmp_path_factory.mktemp("journals")
    return _with_streams(_state(plan(2, 2, data_dir=str(data)), _trade))


@pytest.fixture(scope="module")
def direct_state(tmp_path_factory) -> inv.ClusterState:
    data = tmp_path_factory.mktemp("journals")
    return _with_streams(_state(plan(1, 0, data_dir=str(data)), _direct))


def test_a_real_cluster_run_keeps_every_invariant(accounts_state, direct_state):
    for s in (accounts_state, direct_state):
        assert inv.check_final(s) == []
        assert all(e.replayed is not None for e in s.engines)  # really compared
        assert any(e.events and e.replayed["books"] for e in s.engines)
    s = accounts_state
    assert s.accounts and any(a.holds for a in s.accounts) and any(a.flow for a in s.accounts)
    assert any(o.forwarded for o in s.orders) and all(o.fate for o in s.orders)
    assert sum(1 for o in direct_state.orders if o.accepted) == 12


def _fires(state: inv.ClusterState, check: str, doctor: Callable, *words: str) -> None:
    bad = copy.deepcopy(state)
    doctor(bad)
    found = [v for v in inv.check_final(bad) if v.check == check]
    assert found, f"{check} did not fire"
    text = str(found[0])
    assert all(w in text for w in words), text


def _acct(s: inv.ClusterState) -> inv.AccountShard:
    return next(a for a in s.accounts if a.holds)


def test_negative_balance(accounts_state):
    def doctor(s):
        a = s.accounts[0]
        acct = sorted(a.balances)[0]
        av, h = a.balances[acct]["USD"]
        a.balances[acct]["USD"] = (-1, h)
        a.deposited["USD"] -= av + 1  # (so only the sign is wrong)

    _fires(accounts_state, "no_negative_balance", doctor, "negative", "USD", "available -1")


def test_hold_not_what_the_order_can_cost(accounts_state):
    def doctor(s):
        _acct(s).holds[0].held += 1

    _fires(accounts_state, "holds_cover_orders", doctor, "holds", "can cost")
    _fires(accounts_state, "holds_cover_orders", lambda s: _acct(s).holds.pop(), "orders hold")


def test_money_appears_on_one_shard(accounts_state):
    def doctor(s):
        s.accounts[1].fees["USD"] = s.accounts[1].fees.get("USD", 0) + 7

    _fires(accounts_state, "shard_money", doctor, "USD", "appeared")
    _fires(accounts_state, "money_conserved", doctor, "USD", "difference 7")


def test_a_settlement_landing_on_one_side_only(accounts_state):
    def doctor(s):  # the buyer's shard settled, the seller's never did
        a = s.accounts[0]
        a.flow["BTC"] = a.flow.get("BTC", 0) + 5
        cells = a.balances[sorted(a.balances)[0]]
        cells["BTC"] = (cells["BTC"][0] + 5, cells["BTC"][1])

    _fires(accounts_state, "money_conserved", doctor, "BTC", "trade inflow 5")
    assert inv.check_continuous(copy.deepcopy(accounts_state)) == []


def test_crossed_book(direct_state):
    def doctor(s):
        pair = s.engines[0].books["books"]["BTC-USD"]
        bid = max(o[2] for o in pair["bids"])
        pair["asks"].append(("x", "x", bid, 1, 0, False, 0, 1))

    _fires(direct_state, "books_not_crossed", doctor, "BTC-USD", "best bid")


def test_two_writers_in_one_epoch(direct_state):
    def doctor(s):
        s.writes.append(inv.Write("engine", 0, 0, "engine-0-impostor", 1, 3))

    _fires(direct_state, "one_writer_per_epoch", doctor, "epoch 0", "2 writers", "impostor")


def test_monitor_sees_a_deposed_writer_that_is_gone(direct_state):
    m = inv.Monitor()
    old = copy.deepcopy(direct_state)
    old.engines[0].seq -= 2
    assert m.observe(old) == []
    old.engines[0].seq += 2  # it wrote two more under epoch 0...
    assert m.observe(old) == []
    promoted = copy.deepcopy(direct_state)
    promoted.engines[0].node, promoted.engines[0].epoch = "engine-0-c", 1
    promoted.engines[0].seq += 1
    assert m.observe(promoted) == []  # a new epoch, a new writer: a failover, not a split brain
    new = copy.deepcopy(direct_state)
    new.engines[0].node = "engine-0-b"  # ...and now a second node leads shard 0 at epoch 0
    found = m.observe(new)
    assert [v.check for v in found] == ["one_writer_per_epoch"], found
    assert "engine-0, engine-0-b" in found[0].message
    new.engines[0].seq += 1
    assert m.observe(new) == []  # reported once


def test_order_run_twice_or_after_not_executed(direct_state):
    def twice(s):
        e = s.engines[0]
        acc = next(ev for ev in e.events if ev[0] == EV_ACCEPTED)
        e.events.append((EV_ACCEPTED, e.seq + 1, acc[2], acc[3]))
        e.seq += 1

    _fires(direct_state, "ran_at_most_once", twice, "more than once", "x2")

    def lied(s):
        s.orders[0].fate = inv.NOT_EXECUTED

    _fires(direct_state, "ran_at_most_once", lied, "not executed", "d0")


def test_acked_order_missing_from_the_history(direct_state, accounts_state):
    def lost(s):
        e = s.engines[0]
        e.events = [ev for ev in e.events if not (ev[0] == EV_ACCEPTED and ev[3] == "d3")]

    _fires(direct_state, "acked_once", lost, "acked as accepted", "d3")

    def dropped(s):
        fwd = next(o for o in s.orders if o.forwarded)
        fwd.id = "never-sent"

    _fires(accounts_state, "acked_once", dropped, "never reached", "never-sent")


def test_sequence_gap(direct_state):
    def doctor(s):
        del s.engines[0].events[4]

    _fires(direct_state, "seq_gap_free", doctor, "engine-0", "first wrong at position 5")


def test_stream_gap_duplicate_and_changed_entry(direct_state, accounts_state):
    key = "shardex:events:0"
    _fires(direct_state, "stream_exact", lambda s: s.streams[key].pop(3), "missing 4-0")
    _fires(direct_state, "stream_exact", lambda s: s.streams[key].append(s.streams[key][-1]),
           "duplicate")  # fmt: skip

    def changed(s):
        i, fields = s.streams[key][2]
        s.streams[key][2] = (i, [*fields[:-1], "9"])

    _fires(direct_state, "stream_exact", changed, "entry 3-0")
    bal = "shardex:balances:0"
    _fires(accounts_state, "stream_exact", lambda s: s.streams[bal].pop(0), bal, "missing")


def test_books_differ_from_the_journal_replay(direct_state):
    def doctor(s):
        s.engines[0].books["books"]["BTC-USD"]["bids"].pop()

    _fires(direct_state, "books_equal_replay", doctor, "engine-0", "BTC-USD bids")

    def behind(s):
        s.engines[0].replayed = {**s.engines[0].replayed, "seq": s.engines[0].seq - 1}

    _fires(direct_state, "books_equal_replay", behind, "journal replay reaches")


def test_a_fate_never_learned(accounts_state):
    def doctor(s):
        s.orders[2].fate = "unknown"

    _fires(accounts_state, "fates_known", doctor, "1 orders without a fate", "unknown")


def test_holds_and_books_disagree(accounts_state):
    def orphan(s):
        h = _acct(s).holds[0]
        for e in s.engines:
            for pair in e.books["books"].values():
                pair["bids"] = [o for o in pair["bids"] if o[0] != h.id]
                pair["asks"] = [o for o in pair["asks"] if o[0] != h.id]

    _fires(accounts_state, "holds_match_books", orphan, "not on any book")

    def unheld(s):
        a = _acct(s)
        h = a.holds.pop(0)
        cells = a.balances[h.account]
        cells[h.asset] = (cells[h.asset][0] + h.held, cells[h.asset][1] - h.held)

    _fires(accounts_state, "holds_match_books", unheld, "nobody holds funds for")


def test_a_check_that_breaks_is_reported_not_raised(direct_state):
    bad = copy.deepcopy(direct_state)
    bad.engines[0].books = {"books": {"BTC-USD": {"bids": [("short",)], "asks": [("x",)]}}}
    found = [v for v in inv.check_final(bad) if v.check == "books_not_crossed"]
    assert found and "the check failed" in found[0].message


def test_every_check_is_continuous_or_final():
    assert set(inv.CHECKS) == set(inv.CONTINUOUS) | set(inv.FINAL)
    assert not set(inv.CONTINUOUS) & set(inv.FINAL)
    assert all(inv.CHECKS[name].__doc__ for name in inv.CHECKS)


def test_settlement_anomaly(accounts_state):
    def doctor(s):
        s.accounts[1].anomalies = 2

    _fires(accounts_state, "no_anomalies", doctor, "2 settlement anomalies")


def test_resends_of_applied_settlements_on_a_clean_run(accounts_state):
    def doctor(s):
        s.lossy = False
        s.accounts[0].duplicates = s.accounts[0].settlements + 50

    _fires(accounts_state, "resends_bounded", doctor, "re-sends of ones it had applied")
    lossy = copy.deepcopy(accounts_state)
    doctor(lossy)
    lossy.lossy = True  # messages were lost: re-sends are the repair doing its work
    assert not [v for v in inv.check_final(lossy) if v.check == "resends_bounded"]


def test_a_failover_nobody_needed(direct_state):
    def doctor(s):
        s.leader_losses = {("engine", 0): 1}
        s.writes += [inv.Write("engine", 0, e, f"n{e}", e, e) for e in (1, 2, 3)]

    _fires(direct_state, "no_needless_failover", doctor, "3 epochs wrote", "1 leader losses")


def test_an_order_whose_shard_history_is_not_at_hand_is_not_judged(direct_state):
    s = copy.deepcopy(direct_state)
    s.engines[0].events = None  # (a restarted ring, a trimmed journal)
    assert not [v for v in inv.check_final(s) if v.check == "acked_once"]


def test_ledger_differs_from_the_journal_replay(accounts_state):
    assert all(a.replayed is not None and a.ledger for a in accounts_state.accounts)

    def doctor(s):
        a = _acct(s)
        row = a.ledger["balances"][0]
        a.ledger["balances"][0] = [*row[:2], row[2] + 1, row[3]]

    _fires(accounts_state, "ledgers_equal_replay", doctor, "balances: live [0]", "journal replay")

"""The account tier's remaining edges: the engine shard's account-link peer ids in a secure
cluster, and the account shard's bounded window of transfer refs.

Real processes on loopback for the first (a process holding another account shard's key), the
pure core for the second. The SDK's fates of writes through the account shard (``Retry``, a
timed-out amend) run in one process: tests/unit/test_inproc_fates.py; ``shardex loadgen``'s
fates through a SIGSTOPped account shard in the chaos tier: tests/chaos/test_accounts_stops.py.
"""

from __future__ import annotations

import os
from decimal import Decimal as D

import pytest

from tests.support.accounts import _metric, _wait
from tests.support.cluster import Cluster

pytestmark = pytest.mark.timeout(120)

SYMBOL = "BTC-USD"


def test_account_shard_answers_decide_new_and_amend_fates():
    """The shared decision (``ClientCore.held_fate``), without sockets: what each answer of
    the account shard means for a ``new`` and an ``amend``."""
    from shardex.client import ClientCore
    from shardex.engine.codes import OP_AMEND, OP_CANCEL, OP_NEW

    core = ClientCore("tcp://127.0.0.1:1", key=False)
    new = (OP_NEW, SYMBOL, "o", "acc", 0, 0, 100, 1, 0, False, 0)
    amend = (OP_AMEND, SYMBOL, "o", "acc", 1, None)
    cancel = (OP_CANCEL, SYMBOL, "o", "acc")
    assert core.account_first([new, amend, cancel], [0, 1, 2]) == []  # tier off: engine only
    core.accounts = 2
    assert core.account_first([new, amend, cancel], [0, 1, 2]) == [0, 1]  # cancels: engine
    held = {"state": "held", "seq": 7}
    assert core.held_fate(new, None, held)[0] == "executed"
    assert core.held_fate(new, None, {"state": "not_held", "seq": 7}) is None
    assert core.held_fate(amend, None, held) is None  # forwarded: the engine shard shows it
    assert core.held_fate(amend, None, {**held, "pending": 1})[0] == "unknown"  # in flight
    assert core.held_fate(amend, None, {**held, "pending": 0}) is None
    for cmd in (new, amend):
        assert core.held_fate(cmd, "timeout after 1s", None)[0] == "unknown"
        assert core.held_fate(cmd, None, {"state": "weird"})[0] == "unknown"
        assert core.held_fate(cmd, None, ["held"])[0] == "unknown"
    # the dialogue: account shard first for new/amend, the engine shard for the rest
    steps = core.fate_steps([new, amend, cancel], [0, 1, 2])
    queries, via = next(steps)
    assert via and [q[3] for q in queries] == ["o", "o"]
    queries, via = steps.send([(None, held), (None, held)])
    assert not via and len(queries) == 2  # the amend and the cancel
    live = {"state": "live", "symbol": SYMBOL, "id": "o", "seq": 9, "side": 0, "price": 100,
            "qty": 1}  # fmt: skip
    with pytest.raises(StopIteration) as done:
        steps.send([(None, live), ("overloaded", None)])
    fates, refused = done.value.value
    assert fates[0][0] == "executed" and fates[1][0] == "executed"  # held / amended qty 1
    assert fates[2][0] == "unknown" and refused == [2]  # refused query: asked again


# ---------------------------------------------------------------------------------------------
# the engine shard's account link: peer ids in a secure cluster
# ---------------------------------------------------------------------------------------------


def test_another_account_shards_key_cannot_take_over_a_link_by_its_identity():
    """Regression (secure cluster, M = 2): account shards connected to an engine shard's
    account link (a ROUTER with ROUTER_HANDOVER) with the fixed IDENTITY ``accounts-J``, and
    settlements and HAVE for J were sent to that identity. A process holding account shard
    1's (valid) key that connected with IDENTITY ``accounts-0`` took account shard 0's pipe
    over at the handshake — before sending anything, so no key check could stop it —: the
    settlement of bob's (shard 0) resting order, filled by alice (shard 1), went to it, and
    account shard 0 was muted until its heartbeat reconnected it. Now, secure, the routing id
    is libzmq's own (no IDENTITY, no handover) and is learned only from a message whose key
    is J's: the impostor gets nothing and account shard 0's money keeps moving."""
    import msgpack
    import zmq

    from shardex.auth import KeyFile, client_socket
    from shardex.client import audit_report
    from shardex.wire.protocol import LINK_SYNC

    cl = Cluster(1, accounts=2)
    ctx = zmq.Context.instance()
    impostor = ctx.socket(zmq.DEALER)
    try:
        with cl.client() as c:
            assert c.deposit("bob", "BTC", "1", ref="link-bob").ok  # bob: account shard 0
            assert c.deposit("alice", "USD", "1000", ref="link-alice").ok  # alice: shard 1
            for k in range(3):
                assert c.place(SYMBOL, "sell", "0.01", "10", account="bob", id=f"s{k}").ok
            _wait(lambda: c.book(SYMBOL)["asks"][:1] == [(D("10.00"), D("0.0300"), 3)],
                  "bob's asks on the book")  # fmt: skip
            impostor.setsockopt(zmq.LINGER, 0)
            impostor.setsockopt(zmq.IDENTITY, b"accounts-0")
            client_socket(impostor, KeyFile.read(cl.keys_dir / "accounts-1.key"))
            monitor = impostor.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
            impostor.connect(cl.layout.account_link(0))
            assert monitor.poll(5000), "the impostor's handshake (its key is a valid one)"
            got: list[list[bytes]] = []
            for k in range(3):  # alice takes bob's asks: a settlement for each shard per trade
                r = c.place(SYMBOL, "buy", "0.01", "10", account="alice", id=f"b{k}", tif="ioc")
                assert r.ok, r.reason
                while impostor.poll(300):
                    got.append(impostor.recv_multipart())
            while impostor.poll(1500):  # (> a SYNC/HAVE round of account shard 0)
                got.append(impostor.recv_multipart())
            assert not got, f"the impostor received account shard 0's messages: {got[:2]}"
            # the impostor may speak as what its key is; as shard 0 it is refused, unread:
            # first proved to have arrived (counted as refused), then nothing came back
            port = cl.layout.shard_metrics_port(0)
            refused = _metric(port, "shardex_shard_account_link_total", "refused")
            impostor.send_multipart([LINK_SYNC, msgpack.packb([0, 0])])
            _wait(lambda: _metric(port, "shardex_shard_account_link_total", "refused")
                  > refused, "the impostor's SYNC as shard 0 refused and counted")  # fmt: skip
            assert not impostor.poll(1200)
            _wait(lambda: c.balance("bob").get("USD", (0, 0))[0] > 0
                  and c.balance("bob")["BTC"] == (D("0.97000000"), D(0)),
                  "bob's three fills settled on account shard 0")  # fmt: skip
            _wait(lambda: c.balance("alice")["BTC"][0] == D("0.03"), "alice's fills settled")
            lines, ok = audit_report(c.audit())
            assert ok, lines
        # even account shard 0's own key is not routed to by a name it chose itself (another
        # name than the impostor's: without handover a second peer of a name in use is unread)
        named = ctx.socket(zmq.DEALER)
        try:
            named.setsockopt(zmq.LINGER, 0)
            named.setsockopt(zmq.IDENTITY, b"self-named-0")
            client_socket(named, KeyFile.read(cl.keys_dir / "accounts-0.key"))
            named.connect(cl.layout.account_link(0))
            port = cl.layout.shard_metrics_port(0)
            refused = _metric(port, "shardex_shard_account_link_total", "refused")
            named.send_multipart([LINK_SYNC, msgpack.packb([0, 0])])
            assert not named.poll(1500), "a HAVE went to a self-named peer"
            _wait(lambda: _metric(port, "shardex_shard_account_link_total", "refused")
                  > refused, "the self-named SYNC refused and counted")  # fmt: skip
        finally:
            named.close(0)
        monitor.close(0)
    finally:
        impostor.close(0)
        cl.stop()


# ---------------------------------------------------------------------------------------------
# transfer refs: a bounded dedup window, deterministic under snapshot and replay
# ---------------------------------------------------------------------------------------------

_ACCOUNTS = ("u1", "u2")  # both on account shard 0 of 1
_REF_POOL = [f"ref-{k}" for k in range(8)]


def _transfer_ops():
    from hypothesis import strategies as st

    from shardex.accounts.codes import A_DEPOSIT, A_WITHDRAW

    op = st.tuples(
        st.sampled_from((A_DEPOSIT, A_DEPOSIT, A_WITHDRAW)),
        st.sampled_from(_ACCOUNTS),
        st.just("USD"),
        st.integers(1, 3),
        st.sampled_from(_REF_POOL),
    )
    return st.lists(st.tuples(op, st.booleans()), min_size=1, max_size=60)


def _model_kind(model: dict, window: int, balances: dict, cmd: tuple) -> str:
    """What the documented dedup window says ``cmd`` must do, and the model's update:
    ``repeated`` (same transfer, ref in the window), ``duplicate_ref`` (another transfer,
    ref in the window), ``refused`` (withdraw beyond available: not remembered), ``new``."""
    from shardex.accounts.codes import A_DEPOSIT

    op, account, _asset, amount, ref = cmd
    if ref in model:
        return "repeated" if model[ref] == (op, account, "USD", amount) else "duplicate_ref"
    if op != A_DEPOSIT and amount > balances.get(account, 0):
        return "refused"
    balances[account] = balances.get(account, 0) + (amount if op == A_DEPOSIT else -amount)
    model[ref] = (op, account, "USD", amount)
    while len(model) > window:
        del model[next(iter(model))]
    return "new"


def test_transfer_refs_window_holds_and_replay_equals_live(tmp_path_factory):
    """Regression: every deposit/withdraw ref stayed in memory and in every snapshot forever
    (``AccountCore.refs``). Now the newest ``ref_window`` are kept, oldest evicted first:
    within the window a retry is acknowledged again and a reused ref refused; an evicted ref
    is a new transfer (documented). The window is state: a restore from any snapshot plus a
    journal replay gives the live state byte for byte, and a plain replay of the commands
    from nothing gives the same events."""
    import msgpack
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from shardex.accounts.codes import AE_BALANCE, AE_REJECTED, AE_REPEATED
    from shardex.accounts.core import AccountCore
    from shardex.accounts.machines import AccountMachineFactory
    from shardex.config import load_markets
    from shardex.journal import Journal

    markets = load_markets(None)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(window=st.integers(1, 5), ops=_transfer_ops())
    def check(window: int, ops: list) -> None:
        os.environ["SHARDEX_REF_WINDOW"] = str(window)
        try:
            factory = AccountMachineFactory(0, 1, lambda _s: 0)
        finally:
            del os.environ["SHARDEX_REF_WINDOW"]
        path = tmp_path_factory.mktemp("refs")
        journal = Journal(path, markets, fsync="none", machine=factory)
        live = journal.recover().engine
        model: dict = {}
        balances: dict = {}
        events: list = []
        for cmd, snap in ops:
            out: list = []
            journal.add(live.seq, cmd)
            live.apply(cmd, out)
            journal.commit()
            events.extend(out)
            want = _model_kind(model, window, balances, cmd)
            kinds = {ev[0] for ev in out}
            got = ("repeated" if AE_REPEATED in kinds else "new" if AE_BALANCE in kinds
                   else "duplicate_ref" if any(ev[0] == AE_REJECTED and ev[5] == 15
                                               for ev in out)
                   else "refused")  # fmt: skip
            assert got == want, (cmd, out, model)
            assert list(live.core.refs) == list(model)  # the window: newest, in order
            assert len(live.core.refs) <= window
            live.core.check_integrity()
            if snap:
                journal.snapshot(live)
        journal.close()
        state = msgpack.packb(live.snapshot())
        assert msgpack.unpackb(state)["ref_window"] == window
        # recovery: newest snapshot + journal replay (under another configured window: the
        # snapshot's — or, with none, the first start's — is what the journal was written under)
        os.environ["SHARDEX_REF_WINDOW"] = (
            str(window + 3) if any(s for _, s in ops) else str(window)
        )
        try:
            again = Journal(path, markets, fsync="none", machine=AccountMachineFactory(
                0, 1, lambda _s: 0)).recover().engine  # fmt: skip
        finally:
            del os.environ["SHARDEX_REF_WINDOW"]
        assert msgpack.packb(again.snapshot()) == state
        # a plain replay from nothing: the same events, byte for byte
        core = AccountCore(markets, ref_window=window)
        assert msgpack.packb(core.apply_many([c for c, _ in ops])) == msgpack.packb(events)
        assert msgpack.packb(core.snapshot()) == msgpack.packb(live.core.snapshot())

    check()


def test_ref_window_config_is_checked_and_old_snapshots_are_trimmed():
    """``SHARDEX_REF_WINDOW`` must be an integer >= 1 (a clear error, not a silent default);
    a snapshot from before the window (no ``ref_window``, every ref ever) is restored with the
    configured window, its oldest refs evicted."""
    from shardex.accounts.codes import A_DEPOSIT
    from shardex.accounts.core import REF_WINDOW, AccountCore
    from shardex.accounts.machines import AccountMachineFactory
    from shardex.config import load_markets

    markets = load_markets(None)
    for bad in ("0", "-3", "lots"):
        os.environ["SHARDEX_REF_WINDOW"] = bad
        try:
            with pytest.raises(ValueError, match="SHARDEX_REF_WINDOW"):
                AccountMachineFactory(0, 1, lambda _s: 0)
        finally:
            del os.environ["SHARDEX_REF_WINDOW"]
    assert AccountMachineFactory(0, 1, lambda _s: 0).ref_window == REF_WINDOW
    with pytest.raises(ValueError, match="ref_window"):
        AccountCore(markets, ref_window=0)
    core = AccountCore(markets, ref_window=10)
    core.apply_many([(A_DEPOSIT, "u1", "USD", 1, f"d{k}") for k in range(6)])
    old = core.snapshot()
    del old["ref_window"]  # as written before the window existed
    restored = AccountCore.restore(old, markets, ref_window=4)
    assert list(restored.refs) == ["d2", "d3", "d4", "d5"] and restored.ref_window == 4
    assert AccountCore.restore(core.snapshot(), markets, ref_window=4).ref_window == 10

"""Identity: every known attack on keys and accounts, replayed against a real secure cluster, fails.

Real ``shardex up`` processes with their default security (CURVE keys in DATA_DIR/keys), real
sockets on loopback. Plus a hypothesis property at ``ShardCore`` level: no command ever changes
an order of an account its key may not act for.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zmq.utils.monitor import parse_monitor_message

from shardex.auth import KeyFile, KeyStore, Registry, client_socket, keypair
from shardex.client import AuthenticationFailed, Client, ShardexError
from shardex.engine import DEFAULT_MARKETS
from shardex.engine.codes import (
    BUY,
    EV_AMENDED,
    EV_CANCELLED,
    EV_REJECTED,
    GTC,
    LIMIT,
    OP_AMEND,
    OP_CANCEL,
    OP_NEW,
    SELL,
    STP_NONE,
)
from shardex.node.shard import ShardCore
from shardex.wire.protocol import OP_BOOK, OP_HELLO, decode_reply, encode_request, packb, shard_for
from tests.support.cli import invoke_cli
from tests.support.cluster import ROOT, Cluster

SHARD0 = [s for s in ("BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD") if shard_for(s, 2) == 0]
SHARD1 = [s for s in ("BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD") if shard_for(s, 2) == 1]


def cli(*args: str, timeout: float = 30, real: bool = False) -> subprocess.CompletedProcess:
    """``shardex ARGS`` in this process (click's runner), or (``real``) as a process."""
    if not real:
        return invoke_cli(*args)
    return subprocess.run(
        [sys.executable, "-m", "shardex.cli", *args],
        capture_output=True,
        timeout=timeout,
        cwd=ROOT,
    )


class Keys:
    """The test's users: key files issued by the cluster's own key store."""

    def __init__(self, cluster: Cluster) -> None:
        assert cluster.keys_dir is not None
        self.store = KeyStore(cluster.keys_dir)
        self.alice = self.store.add("alice", "trader", ["alice"])
        self.bob = self.store.add("bob", "trader", ["bob"])
        self.carol = self.store.add("carol", "trader", ["carol"])
        self.reader = self.store.add("feed", "reader")
        server = self.store.server().public
        public, secret = keypair()  # a well-formed key the cluster never registered
        self.stranger = KeyFile(public, secret, server, "mallory", "trader", ("alice",))


def wait_until_known(cluster: Cluster, key: Path) -> None:
    """Processes re-read the registry about once a second: wait until both shards take ``key``."""
    deadline = time.monotonic() + 10
    with Client(cluster.endpoint, key=key, timeout=2) as c:
        while True:
            try:
                for s in (SHARD0[0], SHARD1[0]):
                    c.book(s)
                return
            except ShardexError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


@pytest.fixture(scope="module")
def secure() -> Iterator[tuple[Cluster, Keys]]:
    c = Cluster(2)
    try:
        keys = Keys(c)
        for k in (keys.alice, keys.bob, keys.carol, keys.reader):
            wait_until_known(c, k)
        yield c, keys
    finally:
        c.stop()


def test_a_strangers_key_is_refused_at_connect_and_the_cluster_is_unaffected(secure):
    cluster, keys = secure
    with cluster.client() as admin:
        before = admin.topology()
    for kw in ({}, {"direct": True}):
        with (
            pytest.raises(AuthenticationFailed, match="authentication failed"),
            Client(cluster.endpoint, key=keys.stranger, timeout=1, **kw) as c,
        ):
            c.place(SHARD0[0], "buy", "1", "100", account="alice")
    # the shards' own direct ports refuse it too (ZAP in each shard)
    eps = [cluster.layout.direct(0), cluster.layout.direct(1)]
    with (
        pytest.raises(AuthenticationFailed, match="authentication failed"),
        Client(eps[0], key=keys.stranger, timeout=1, shard_endpoints=eps) as c,
    ):
        c.place(SHARD0[0], "buy", "1", "100", account="alice")
    # no key at all against a secure cluster: a clear error, not a bare timeout
    with (
        pytest.raises(AuthenticationFailed, match="handshake failed"),
        Client(cluster.endpoint, key=False, timeout=1) as c,
    ):
        c.book(SHARD0[0])
    with cluster.client(account="after") as admin:
        assert admin.place(SHARD0[0], "buy", "1", "1").ok
        after = admin.topology()
    assert [t["pid"] for t in after["topology"]] == [t["pid"] for t in before["topology"]]
    assert "refused a CURVE connection on clients: authentication failed: unknown key" in (
        cluster.output()
    )


@pytest.mark.parametrize("direct", [False, True])
def test_alices_key_cannot_place_cancel_or_amend_for_bob(secure, direct):
    cluster, keys = secure
    symbol = SHARD1[0]
    oid = f"bob-order-{int(direct)}"
    with Client(cluster.endpoint, key=keys.bob, timeout=5, direct=direct) as bob:
        assert bob.account == "bob"  # the key's only account is the default
        assert bob.place(symbol, "sell", "2", "900", id=oid).ok
    not_allowed = "account bob not allowed for this key"
    with Client(cluster.endpoint, key=keys.alice, timeout=5, direct=direct) as alice:
        assert alice.account == "alice"
        r = alice.cancel(symbol, oid, account="bob")
        assert r.rejected and r.reason == not_allowed, r
        r = alice.amend(symbol, oid, qty="1", price="901", account="bob")
        assert r.rejected and r.reason == not_allowed, r
        r = alice.place(symbol, "buy", "1", "1", account="bob")
        assert r.rejected and r.reason == not_allowed, r
        with pytest.raises(ShardexError, match=not_allowed):
            alice.order_status(symbol, oid, account="bob")  # not even bob's order's fate
        # passing her own account does not reach bob's order either (orders are per account)
        assert alice.cancel(symbol, oid).rejected
    with Client(cluster.endpoint, key=keys.bob, timeout=5) as bob:
        st_ = bob.order_status(symbol, oid)
    assert st_["state"] == "live" and st_["qty"] == Decimal(2) and st_["price"] == Decimal(900)


class RogueShard:
    """A DEALER posing as ``shard-0`` on the router's shard port, saying hello with a rogue
    direct endpoint (what the issue's attack did). Its socket monitor is the witness that the
    router saw the connection: a test of "nothing happened" first proves that its message
    arrived and was refused, else it would pass as well against a router it never reached."""

    REFUSED = {
        zmq.EVENT_HANDSHAKE_FAILED_AUTH,  # CURVE key refused by the router's ZAP handler
        zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,  # no CURVE at all against a CURVE server
        zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
    }

    def __init__(self, cluster: Cluster, key: KeyFile | None) -> None:
        self.cluster = cluster
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, b"shard-0")
        self.sock.setsockopt(zmq.LINGER, 0)
        if key is not None:
            client_socket(self.sock, key)
        self.mon = self.sock.get_monitor_socket()
        self.events: set[int] = set()
        self.sock.connect(cluster.layout.backend)

    def hello(self) -> None:
        hello = packb(
            (OP_HELLO, {"shard": 0, "shards": 2, "pid": 1, "direct": "tcp://127.0.0.1:1",
                        "pub": "x"})
        )  # fmt: skip
        try:
            self.sock.send_multipart([b"", b"HELLO", hello], zmq.NOBLOCK)
        except zmq.Again:
            pass
        while self.mon.poll(0):
            self.events.add(parse_monitor_message(self.mon.recv_multipart())["event"])

    def hello_until(self, arrived: Callable[[], bool], what: str) -> None:
        """Say hello until ``arrived()`` (bounded): the proof that the router got it."""
        deadline = time.monotonic() + 15
        while True:
            self.hello()
            if arrived():
                return
            assert time.monotonic() < deadline, f"never seen: {what}"
            time.sleep(0.05)

    def close(self) -> None:
        self.sock.disable_monitor()
        self.mon.close(0)
        self.sock.close(0)


@pytest.mark.parametrize("who", ["alice", "stranger", "no key"])
def test_a_non_shard_key_posing_as_shard_0_gets_no_orders_and_cannot_change_topology(
    secure, who
):
    cluster, keys = secure
    key = {"alice": KeyFile.read(keys.alice), "stranger": keys.stranger, "no key": None}[who]
    why = {"alice": "key not allowed here", "stranger": "unknown key", "no key": None}[who]
    line = f"refused a CURVE connection on shards: authentication failed: {why}"
    logged = cluster.output().count(line)
    with cluster.client() as admin:
        before = admin.topology()["topology"][0]
    rogue = RogueShard(cluster, key)
    try:
        # arrival first: the router refused its handshake (and, for a key, said so in its log)
        rogue.hello_until(
            lambda: bool(rogue.events & RogueShard.REFUSED)
            and (why is None or cluster.output().count(line) > logged),
            f"the router refusing {who}'s connection to its shard port",
        )
        with cluster.client(account="victim") as admin:
            results = admin.submit_many(
                [admin.order(SHARD0[0], "buy", "1", "1", id=f"v-{who}-{i}") for i in range(20)]
            )
            assert all(r.ok and r.events[0]["ev"] == "accepted" for r in results), results[:2]
            after = admin.topology()["topology"][0]
        assert not rogue.sock.poll(200), "the rogue shard received client orders"
        assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in rogue.events
        assert after["pid"] == before["pid"] and after["direct"] == before["direct"]
        assert after["direct"] == cluster.layout.direct(0)
    finally:
        rogue.close()


def test_a_shard_key_of_another_index_posing_as_shard_0_gets_no_orders(secure):
    cluster, keys = secure
    rogue_key = KeyFile.read(keys.store.add("rogue-shard", "shard", shard=1))
    line = (
        "ALERT refused a registration as shard 0 from a key not issued for it "
        "(shard key 'rogue-shard')"
    )
    logged = cluster.output().count(line)
    rogue = RogueShard(cluster, rogue_key)
    try:
        # arrival first: a shard key passes the handshake, its HELLO reaches the router, which
        # refuses the registration (a new key: the router reads the registry on a miss)
        rogue.hello_until(lambda: cluster.output().count(line) > logged, line)
        assert zmq.EVENT_HANDSHAKE_SUCCEEDED in rogue.events
        with cluster.client(account="victim", timeout=2) as admin:
            r = admin.place(SHARD0[0], "buy", "1", "1", id="hijack-probe")
            topology = admin.topology()["topology"][0]
        got = rogue.sock.poll(500)
    finally:
        rogue.close()
        keys.store.revoke("rogue-shard")
    assert r.ok and not got, (r, got)
    assert topology["direct"] == cluster.layout.direct(0)


def test_a_revoked_key_is_cut_off_on_its_existing_connection(secure):
    cluster, keys = secure
    via_router = Client(cluster.endpoint, key=keys.carol, timeout=3)
    direct = Client(cluster.endpoint, key=keys.carol, timeout=3, direct=True)
    try:
        assert via_router.place(SHARD0[0], "buy", "1", "2").ok
        assert direct.place(SHARD1[0], "buy", "1", "2").ok
        proc = cli("keys", "revoke", "carol", "--keys-dir", str(cluster.keys_dir))
        assert proc.returncode == 0 and b"revoked trader key 'carol'" in proc.stdout, proc
        deadline = time.monotonic() + 10
        refused = {"router": None, "direct": None}
        while time.monotonic() < deadline and None in refused.values():
            for name, c in (("router", via_router), ("direct", direct)):
                if refused[name] is None:
                    r = c.place(SHARD0[0] if name == "router" else SHARD1[0], "buy", "1", "2")
                    if not r.ok:
                        refused[name] = r.reason
            time.sleep(0.1)
        assert refused == {
            "router": "authentication failed: unknown key",
            "direct": "authentication failed: unknown key",
        }
    finally:
        via_router.close()
        direct.close()
    with (
        pytest.raises(AuthenticationFailed, match="authentication failed"),
        Client(cluster.endpoint, key=keys.carol, timeout=2) as c,
    ):
        c.book(SHARD0[0])


def test_a_reader_key_reads_the_book_but_cannot_place(secure):
    cluster, keys = secure
    with cluster.client(account="maker") as admin:
        assert admin.place(SHARD0[0], "sell", "1", "5000", id="reader-visible").ok
    with Client(cluster.endpoint, key=keys.reader, timeout=5) as c:
        book = c.book(SHARD0[0])
        assert any(str(p) == "5000.00" for p, _, _ in book["asks"]), book
        assert len(c.status()) == 2
        r = c.place(SHARD0[0], "buy", "1", "5000", account="maker")
        assert r.reason == "account maker not allowed for this key", r
        r = c.cancel(SHARD0[0], "reader-visible", account="maker")
        assert r.reason == "account maker not allowed for this key", r
    with cluster.client(account="maker") as admin:
        assert admin.order_status(SHARD0[0], "reader-visible")["state"] == "live"


def test_cli_keys_add_list_and_status_with_a_key(secure, tmp_path):
    cluster, _ = secure
    out = tmp_path / "dave.key"
    kd = ["--keys-dir", str(cluster.keys_dir)]
    proc = cli("keys", "add", "--account", "dave", "--out", str(out), *kd, real=True)
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout.decode() and stat.S_IMODE(out.stat().st_mode) == 0o600
    secret = json.loads(out.read_text())["secret"]
    listing = cli("keys", "list", *kd)
    assert listing.returncode == 0
    assert b"dave" in listing.stdout and secret.encode() not in listing.stdout
    assert secret.encode() not in proc.stdout + proc.stderr
    wait_until_known(cluster, out)
    proc = cli("status", "--endpoint", cluster.endpoint, "--key", str(out))
    assert proc.returncode == 0 and b"INSECURE" not in proc.stdout, proc.stderr
    with Client(cluster.endpoint, key=str(out), timeout=5) as c:  # account from the key
        assert c.place(SHARD0[0], "buy", "1", "3").ok
    # bad input: one line each
    for args, needle in (
        (("keys", "add", *kd), b"a trader key needs at least one --account"),
        (("keys", "add", "--role", "reader", "--account", "x", *kd), b"--account is for trader"),
        (("keys", "add", "--account", "dave", *kd), b"exists"),
        (("keys", "revoke", "nobody", *kd), b"no live key named 'nobody'"),
    ):
        proc = cli(*args)
        err = proc.stderr.strip()
        assert proc.returncode != 0 and needle in err and len(err.splitlines()) == 1, (args, err)


def test_key_files_are_private_and_no_secret_appears_in_any_log(secure):
    cluster, keys = secure
    # an attack of its own, so the log below holds refusals whatever ran before (alone, or with
    # the module's other tests on another worker)
    with (
        pytest.raises(AuthenticationFailed, match="authentication failed"),
        Client(cluster.endpoint, key=keys.stranger, timeout=1) as c,
    ):
        c.place(SHARD0[0], "buy", "1", "100", account="alice")
    kd = cluster.keys_dir
    assert kd is not None and stat.S_IMODE(kd.stat().st_mode) == 0o700
    secrets: list[str] = []
    files = [p for p in kd.iterdir() if p.suffix in (".key", ".json")]
    assert {"admin.key", "server.key", "registry.json", "shard-0.key", "shard-1.key"} <= {
        p.name for p in files
    }
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p
        data = json.loads(p.read_text())
        if p.suffix == ".key":
            secrets.append(data["secret"])
        elif p.name == "redis.json":
            secrets.extend(str(v) for v in _strings(data))
    log = cluster.output()
    assert "refused a CURVE connection" in log  # the log did see the attack above
    leaked = [s[:6] for s in secrets if len(s) >= 16 and s in log]
    assert not leaked, leaked


def _strings(obj) -> list[str]:
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return [obj] if isinstance(obj, str) else []


def test_processes_without_keys_refuse_to_start_with_one_line():
    for component in ("router", "engine", "bridge"):
        args = [component] + (["--shard", "0"] if component == "engine" else [])
        env = {k: v for k, v in os.environ.items() if k != "SHARDEX_DATA_DIR"}
        proc = subprocess.run(
            [sys.executable, "-m", "shardex.cli", *args],
            capture_output=True,
            timeout=30,
            cwd=ROOT,
            env=env,
        )
        err = proc.stderr.decode().strip()
        assert proc.returncode == 2 and len(err.splitlines()) == 1, (component, err)
        assert "no keys" in err and "--insecure" in err and "--data-dir" in err, err


# ------------------------------------------------------------------ the property, at core level

ACCOUNTS = ("alice", "bob", "carol")
SYMBOL = "BTC-USD"

# Who may act for which account: written down by hand from the documented roles (README
# "Identity and keys", the table of roles, and shardex/auth.py's docstring), never computed by
# ``KeyInfo.may_act_for``, so that a wrong rule there is caught instead of agreed with:
#   trader: orders for its own accounts only; admin: everything, any account; reader: market
#   data and status, no orders; bridge: reads the event stream; shard / accounts: process keys
#   (register as their shard, carry the links), never a client's orders; revoked: nothing.
MAY_ACT_FOR: dict[str, frozenset[str]] = {
    "admin": frozenset(("alice", "bob", "carol", "dave")),  # any account, even one no key holds
    "alice": frozenset(("alice",)),
    "bob": frozenset(("bob",)),
    "alice+bob": frozenset(("alice", "bob")),
    "reader": frozenset(),
    "bridge": frozenset(),
    "shard-0": frozenset(),
    "accounts-0": frozenset(),
}
# Refused before any rule as an unknown key: never registered, no key at all, or revoked (it
# held carol before).
UNKNOWN_KEYS = ("stranger", "none", "revoked")


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> tuple[Registry, dict[str, str | None]]:
    reg = Registry(tmp_path_factory.mktemp("reg") / "registry.json")
    users: dict[str, str | None] = {}
    for name, role, accounts in (
        ("admin", "admin", ()),
        ("alice", "trader", ("alice",)),
        ("bob", "trader", ("bob",)),
        ("alice+bob", "trader", ("alice", "bob")),
        ("reader", "reader", ()),
        ("bridge", "bridge", ()),
        ("revoked", "trader", ("carol",)),
    ):
        users[name] = reg.add(name, role, accounts)[0]
    users["shard-0"] = reg.add("shard-0", "shard", shard=0)[0]
    users["accounts-0"] = reg.add("accounts-0", "accounts", shard=0)[0]
    reg.revoke("revoked")
    users["stranger"] = keypair()[0]
    users["none"] = None
    assert set(users) == set(MAY_ACT_FOR) | set(UNKNOWN_KEYS)  # the table covers every key
    return reg, users


def test_who_may_act_for_which_account_is_the_documented_table(registry):
    reg, users = registry
    for who, accounts in MAY_ACT_FOR.items():
        key = reg.lookup(users[who])
        assert key is not None, who
        for account in (*ACCOUNTS, "dave"):
            assert key.may_act_for(account) == (account in accounts), (who, account)
    for who in UNKNOWN_KEYS:
        assert reg.lookup(users[who]) is None, who
    revoked = reg.keys[users["revoked"]]  # its entry, kept as revoked: it acts for nobody
    assert revoked.revoked and not any(revoked.may_act_for(a) for a in (*ACCOUNTS, "dave"))


command = st.tuples(
    st.sampled_from((OP_NEW, OP_NEW, OP_CANCEL, OP_AMEND)),
    st.sampled_from(ACCOUNTS),
    st.integers(0, 5),  # order id pool: ids collide across accounts on purpose
    st.sampled_from((BUY, SELL)),
    st.integers(95, 105),  # price ticks: crossing happens
    st.integers(1, 4),  # qty lots
)


def _orders(core: ShardCore) -> dict[str, tuple]:
    book = core.engine.books.get(SYMBOL)
    if book is None:
        return {}
    return {oid: (o.account, o.side, o.price, o.qty) for oid, o in book.orders.items() if o.qty}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(st.sampled_from((*MAY_ACT_FOR, *UNKNOWN_KEYS)), command), min_size=1, max_size=40
    )
)
def test_no_command_changes_an_order_of_an_account_its_key_may_not_act_for(registry, steps):
    reg, users = registry
    core = ShardCore(0, 1, DEFAULT_MARKETS, registry=reg)
    owner: dict[str, str] = {}  # order id → account that placed it (while it rests)
    for who, (op, account, n, side, price, qty) in steps:
        known = who not in UNKNOWN_KEYS
        allowed = account in MAY_ACT_FOR.get(who, ())  # the table, not the code under test
        oid = f"o{n}"
        if op == OP_NEW:
            cmd = (OP_NEW, SYMBOL, oid, account, side, LIMIT, price, qty, GTC, False, STP_NONE)
        elif op == OP_CANCEL:
            cmd = (OP_CANCEL, SYMBOL, oid, account)
        else:
            cmd = (OP_AMEND, SYMBOL, oid, account, qty, price)
        before = _orders(core)
        out: list = []
        error, results = decode_reply(core.handle(encode_request([cmd]), out, {}, user=users[who]))
        after = _orders(core)
        if not known:
            assert error == "authentication failed: unknown key" and after == before
            continue
        assert error is None
        (evs,) = results
        if not allowed:
            # refused as a whole: one reject naming the account, and not one order changed
            assert len(evs) == 1 and evs[0][0] == EV_REJECTED, evs
            assert evs[0][4] == f"account {account} not allowed for this key"
            assert after == before
            continue
        # allowed: a user cancel or an amend only ever touches an order of this account
        for ev in evs:
            if (ev[0] == EV_CANCELLED and ev[4] == "user") or ev[0] == EV_AMENDED:
                assert owner.get(ev[3], account) == account, (who, cmd, ev)
        for oid_, (acct, *_rest) in after.items():
            if oid_ not in before:
                assert acct == account, (who, cmd, after)  # a new resting order: its own
        for oid_ in list(owner):
            if oid_ not in after:
                del owner[oid_]
        for oid_, (acct, *_rest) in after.items():
            owner.setdefault(oid_, acct)
    # every resting order belongs to an account some key allowed to place it
    for acct, *_rest in _orders(core).values():
        assert acct in ACCOUNTS


def test_book_reads_need_a_live_key_at_core_level(registry):
    reg, users = registry
    core = ShardCore(0, 1, DEFAULT_MARKETS, registry=reg)
    payload = encode_request([(OP_BOOK, SYMBOL, 5)])
    for who in ("reader", "alice", "admin", "bridge"):
        error, _ = decode_reply(core.handle(payload, [], {}, user=users[who]))
        assert error is None, who
    for who in ("stranger", "revoked", "none"):
        error, _ = decode_reply(core.handle(payload, [], {}, user=users[who]))
        assert error == "authentication failed: unknown key", who


def test_a_key_added_is_known_at_once_to_a_process_that_read_the_registry_before(tmp_path):
    """Regression: the router's ZAP handler re-reads the registry per connection, a shard only
    once a second, so a brand-new key was accepted at connect and then refused by the shard
    (`authentication failed: unknown key`) for up to a second."""
    store = KeyStore(tmp_path / "keys")
    store.init()
    process_view = store.registry()  # what a running shard holds
    kf = KeyFile.read(store.add("zed", "trader", ["zed"]))
    info = process_view.lookup(kf.public)
    assert info is not None and info.may_act_for("zed") and not info.may_act_for("alice")
    assert process_view.lookup(keypair()[0]) is None  # a stranger stays unknown

"""SDK tests: both clients against a stand-in cluster (a real ZeroMQ ROUTER in a thread), and a
peer that is not there. The socket-free core's decoders on garbage are
tests/unit/test_client_decoders.py; the SDK against a whole cluster runs in one process:
tests/unit/test_inproc_orders.py and tests/unit/test_inproc_fates.py."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shardex.client import (
    EXECUTED,
    NOT_EXECUTED,
    UNKNOWN,
    AsyncClient,
    Client,
    Result,
    ShardexError,
)
from shardex.engine import DEFAULT_MARKETS, Market, MarketError
from shardex.engine.codes import OP_AMEND, OP_CANCEL, OP_NEW
from shardex.wire.protocol import (
    ERR_OVERLOADED,
    OP_BOOK,
    OP_MARKETS,
    OP_ORDER,
    encode_reply,
    markets_to_wire,
)
from shardex.wire.transport import Pending, StopFlag, check_endpoint
from tests.support.standin import StandIn, shard_like

ROOT = Path(__file__).resolve().parents[2]

CUSTOM = {
    "FOO-USD": Market("FOO-USD", Decimal("0.5"), Decimal("2"), Decimal("1000"), Decimal("1000"))
}


# -- a stand-in cluster: one ROUTER answering like router + shard ---------------------------------


# -- endpoint validation (a raw ZMQError before) --------------------------------------------------


@pytest.mark.parametrize("bad", ["localhost:5555", "tcp://localhost", "tcp://h:99999", "", "5555"])
def test_bad_endpoint_is_a_clear_error(bad: str) -> None:
    with pytest.raises(ShardexError, match=r"tcp://host:port") as exc:
        Client(bad)
    assert repr(bad)[1:-1] in str(exc.value)
    with pytest.raises(ShardexError, match=r"tcp://host:port"):
        AsyncClient(bad)
    with pytest.raises(ShardexError, match=r"tcp://host:port"):
        Client("tcp://127.0.0.1:5555", shard_endpoints=["tcp://127.0.0.1:6000", bad])
    assert check_endpoint("tcp://[::1]:5555") == "tcp://[::1]:5555"


# -- AsyncClient and Client map the same errors (a KeyError in the async one before) -------------


def test_unregistered_direct_shard_is_shardex_error_in_both_clients() -> None:
    topo = [{"shard": 0, "pid": 1, "direct": "tcp://127.0.0.1:1"}, {"shard": 1}]
    with StandIn(shard_like(DEFAULT_MARKETS, topo)) as si:
        c = Client(si.endpoint, direct=True, timeout=2, account="a")
        with c, pytest.raises(ShardexError, match="shard 1 has not registered"):
            c.place("BTC-USD", "buy", "1", "100")

        async def main() -> None:
            async with AsyncClient(si.endpoint, direct=True, timeout=2, account="a") as c:
                await c.place("BTC-USD", "buy", "1", "100")

        with pytest.raises(ShardexError, match="shard 1 has not registered"):
            asyncio.run(main())


def test_direct_clients_reach_account_shards_through_the_router() -> None:
    """Regression: a direct ``AsyncClient`` on a cluster with account shards looked for the
    account shard's slot among its direct engine sockets (IndexError) when placing an order;
    the sync client sent it through the router. Both now share one ``_sock``: an order goes to
    its account's shard through the router (``@account``), reads to the direct engine socket."""

    def engine_shard(key: bytes, cmds: Any) -> bytes | None:
        return encode_reply([{"symbol": c[1], "bids": [], "asks": []} for c in cmds])

    with StandIn(engine_shard) as shard:
        topo = [{"shard": 0, "pid": 1, "direct": shard.endpoint,
                 "markets": markets_to_wire(DEFAULT_MARKETS)}]  # fmt: skip

        def router(key: bytes, cmds: Any) -> bytes | None:
            if key == b"":
                return encode_reply([{"router": True, "shards": 1, "accounts": 1,
                                      "topology": topo}])  # fmt: skip
            return encode_reply([() for _ in cmds])  # the account shard: held and forwarded

        with StandIn(router) as si:
            with Client(si.endpoint, direct=True, timeout=2, account="alice") as c:
                assert c.place("BTC-USD", "buy", "1", "100").ok
                assert c.book("BTC-USD")["symbol"] == "BTC-USD"

            async def main() -> Result:
                async with AsyncClient(si.endpoint, direct=True, timeout=2, account="bob") as c:
                    assert (await c.book("BTC-USD"))["symbol"] == "BTC-USD"
                    return await c.place("BTC-USD", "buy", "1", "100")

            assert asyncio.run(main()).ok
            writes = [key for key, cmds in si.requests if cmds and cmds[0][0] == OP_NEW]
            assert writes == [b"@alice", b"@bob"]
            assert [cmds[0][0] for _, cmds in shard.requests if cmds] == [OP_BOOK, OP_BOOK]


def test_both_clients_give_equal_results_on_the_stand_in() -> None:
    with StandIn(shard_like(DEFAULT_MARKETS)) as si, Client(si.endpoint, timeout=2) as c:
        cmds = [c.order("ETH-USD", "sell", "1.5", "2000.00", id="x1", account="s")]
        cmds.append(c.order("ETH-USD", "buy", "1", "2000.00", id="x2", account="s"))
        sync = c.submit_many(cmds)

    with StandIn(shard_like(DEFAULT_MARKETS)) as si:

        async def main() -> list[Result]:
            async with AsyncClient(si.endpoint, timeout=2, account="s") as c:
                return await c.submit_many(cmds)

        asy = asyncio.run(main())
    assert [(r.events, r.error, r.fate) for r in sync] == [(r.events, r.error, r.fate) for r in asy]
    assert sync[1].filled == Decimal("1.000") and sync[1].fate == EXECUTED


# -- markets: a TOML path, a mapping, or learned from the cluster --------------------------------


def test_markets_from_toml_path_and_mapping(tmp_path: Path) -> None:
    path = tmp_path / "mk.toml"
    path.write_text('[markets.AAPL-USD]\ntick = "0.01"\nlot = "1"\n')
    with Client("tcp://127.0.0.1:5555", markets=str(path)) as c:
        assert c.markets["AAPL-USD"].tick == Decimal("0.01") and "BTC-USD" in c.markets
        assert c.command(c.order("AAPL-USD", "buy", "3", "1.50", account="a"))[6:8] == (150, 3)
    with Client("tcp://127.0.0.1:5555", markets=path) as c:
        assert "AAPL-USD" in c.markets
    with Client("tcp://127.0.0.1:5555", markets=CUSTOM) as c:
        assert list(c.markets) == ["FOO-USD"]
    with pytest.raises(MarketError, match="nope.toml"):
        Client("tcp://127.0.0.1:5555", markets=str(tmp_path / "nope.toml"))
    with pytest.raises(TypeError, match="mapping or a TOML file path"):
        Client("tcp://127.0.0.1:5555", markets=42)  # type: ignore[arg-type]


def test_markets_learned_from_topology() -> None:
    topo = [{"shard": 0, "pid": 1, "markets": markets_to_wire(CUSTOM)}]
    with StandIn(shard_like(CUSTOM, topo)) as si, Client(si.endpoint, timeout=2) as c:
        r = c.place("FOO-USD", "buy", "4", "10.5", account="a")
        assert r.ok, r.reason
        assert si.requests[-1][1][0][6:8] == (21, 2)  # ticks and lots of the custom market
        assert c.markets_source == "cluster"
        assert not any(cmds and cmds[0][0] == OP_MARKETS for _, cmds in si.requests)


def test_markets_from_op_markets_then_defaults_when_cluster_does_not_say() -> None:
    reply = {"markets": markets_to_wire(CUSTOM)}
    with StandIn(shard_like(CUSTOM, markets_reply=reply)) as si, Client(si.endpoint) as c:
        assert c.place("FOO-USD", "sell", "2", "1", account="a").ok
        assert c.markets_source == "cluster"

    async def main(endpoint: str) -> Result:
        async with AsyncClient(endpoint, timeout=2) as c:
            return await c.place("FOO-USD", "sell", "2", "1", account="a")

    with StandIn(shard_like(CUSTOM, markets_reply=reply)) as si:
        assert asyncio.run(main(si.endpoint)).ok

    # an older shard rejects OP_MARKETS with events: defaults, asked once only
    old = [(3, 1, "", "", "unknown op 14")]
    with StandIn(shard_like(DEFAULT_MARKETS, markets_reply=old)) as si:
        with Client(si.endpoint, timeout=2) as c:
            assert c.place("BTC-USD", "buy", "1", "100", account="a").ok
            assert c.place("BTC-USD", "buy", "1", "100", account="a").ok
            assert c.markets_source == "defaults"
        asks = [1 for _, cmds in si.requests if cmds and cmds[0][0] == OP_MARKETS]
        assert len(asks) == 1


# -- fate on timeout -------------------------------------------------------------------------------


def _fate_handler() -> Callable[[bytes, Any], bytes | None]:
    """new "run" executes but its reply is lost; "lost" never arrives; "dark" has no answer."""
    states = {
        "run": {
            "state": "live",
            "symbol": "BTC-USD",
            "id": "run",
            "side": 0,
            "price": 10_000,
            "qty": 3,
            "filled": 1,
            "trades": [(10_000, 1, 7)],
            "seq": 9,
        },
        "lost": {"state": "unknown", "symbol": "BTC-USD", "id": "lost", "seq": 9},
        "gone": {
            "state": "cancelled",
            "symbol": "BTC-USD",
            "id": "gone",
            "filled": 0,
            "trades": [],
            "reason": "user",
            "seq": 9,
        },
    }
    return shard_like(
        DEFAULT_MARKETS,
        silent=lambda c: c[0] in (OP_NEW, OP_CANCEL, OP_AMEND) and c[2] != "fine",
        order_state=lambda c: states.get(c[3]),
    )


def test_timeout_asks_the_shard_for_the_fate() -> None:
    with StandIn(_fate_handler()) as si, Client(si.endpoint, timeout=0.3, account="a") as c:
        cmds = [c.order("BTC-USD", "buy", "0.0004", "100", id=i) for i in ("run", "lost", "fine")]
        cmds += [c._cancel_cmd("BTC-USD", "gone", None), c.order("BTC-USD", "buy", "1", id="dark")]
        run, lost, fine, gone, dark = c.submit_many(cmds, batch=1)
        assert run.error.startswith("timeout") and run.fate == EXECUTED
        assert run.status["state"] == "live" and run.status["price"] == Decimal("100.00")
        assert run.status["qty"] == Decimal("0.0003") and run.status["side"] == "buy"
        assert run.status["trades"] == [(Decimal("100.00"), Decimal("0.0001"), 7)]
        assert lost.fate == NOT_EXECUTED and lost.status["state"] == "unknown"
        assert fine.ok and fine.fate == EXECUTED and fine.status is None
        assert gone.fate == EXECUTED and gone.status["reason"] == "user"
        assert dark.fate == UNKNOWN and "timeout" in dark.status["error"]
        assert c.order_status("BTC-USD", "run")["filled"] == Decimal("0.0001")
        queries = [cmds[0] for _, cmds in si.requests if cmds and cmds[0][0] == OP_ORDER]
        assert (OP_ORDER, "BTC-USD", "a", "run") in queries

    async def main(endpoint: str) -> tuple[list[Result], dict]:
        async with AsyncClient(endpoint, timeout=0.3, account="a") as c:
            rs = await c.submit_many(cmds, batch=1)
            return rs, await c.order_status("BTC-USD", "lost")

    with StandIn(_fate_handler()) as si:
        rs, st_ = asyncio.run(main(si.endpoint))
    assert [r.fate for r in rs] == [EXECUTED, NOT_EXECUTED, EXECUTED, EXECUTED, UNKNOWN]
    assert st_ == {"state": "unknown", "symbol": "BTC-USD", "id": "lost", "seq": 9}


def test_batch_errors_are_not_executed_and_need_no_query() -> None:
    with StandIn(lambda key, cmds: encode_reply(None, ERR_OVERLOADED) if key else None) as si:
        with Client(si.endpoint, timeout=0.5, account="a", shard_endpoints=None) as c:
            c.shards = 1
            c.markets_source = "given"
            (r,) = c.submit_many([c.order("BTC-USD", "buy", "1", "100")])
        assert r.error == "overloaded" and r.fate == NOT_EXECUTED and r.status is None
        assert all(cmds[0][0] != OP_ORDER for _, cmds in si.requests)


# -- transport -------------------------------------------------------------------------------------


def test_pending_expires_oldest_first() -> None:
    now = [0.0]
    p = Pending(1.0, clock=lambda: now[0])
    p.add(b"a", 1)
    now[0] = 0.5
    p.add(b"b", 2)
    assert p.expire(1.2) == [1] and p.pop(b"a") is None and p.next_deadline() == 1.5
    assert p.pop(b"b") == 2 and not p


def test_stop_flag_set_by_sigterm_and_restored() -> None:
    old = signal.getsignal(signal.SIGTERM)
    seen: list[int] = []
    with StopFlag.install(on_signal=seen.append) as stop:
        assert not stop
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not stop and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stop and seen == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is old


# -- a dead peer ---------------------------------------------------------------------------------


def test_both_clients_map_a_dead_direct_peer_the_same() -> None:
    """A shard endpoint with nothing behind it: both clients say "cannot reach", not executed."""
    bad = ["tcp://127.0.0.1:1"]
    with Client(bad[0], shard_endpoints=bad, timeout=0.3, account="a") as c:
        c.markets_source = "given"
        (r,) = c.submit_many([c.order("BTC-USD", "buy", "1", "100")])

    async def main() -> Result:
        async with AsyncClient(bad[0], shard_endpoints=bad, timeout=0.3) as c:
            c.markets_source = "given"
            return (await c.submit_many([c.order("BTC-USD", "buy", "1", "100", account="a")]))[0]

    ra = asyncio.run(main())
    for res in (r, ra):
        assert res.error.startswith("cannot reach") and res.fate == NOT_EXECUTED


# ------------------------------------------------------------------------------ keys


def test_key_resolution_order(tmp_path, monkeypatch):
    from shardex.auth import KeyStore
    from shardex.wire.transport import default_key_path, find_key

    store = KeyStore(tmp_path / "data" / "keys")
    store.init()
    alice = store.add("alice", "trader", ["alice"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SHARDEX_DATA_DIR", raising=False)
    monkeypatch.delenv("SHARDEX_KEY", raising=False)
    # nothing named: the local cluster's admin key (./data/keys/admin.key)
    assert default_key_path() == Path("data/keys/admin.key")
    assert find_key().role == "admin"
    # $SHARDEX_DATA_DIR names another cluster: its admin key, or none if it has none
    monkeypatch.setenv("SHARDEX_DATA_DIR", str(tmp_path / "elsewhere"))
    assert find_key() is None
    # $SHARDEX_KEY wins over both; "none" means no key
    monkeypatch.setenv("SHARDEX_KEY", str(alice))
    assert find_key().name == "alice"
    monkeypatch.setenv("SHARDEX_KEY", "none")
    assert find_key() is None
    # an explicit key wins over everything; False is "no key" whatever the environment says
    assert find_key(str(alice)).accounts == ("alice",)
    monkeypatch.setenv("SHARDEX_KEY", str(alice))
    assert find_key(False) is None


def test_client_key_sets_the_default_account_and_bad_key_files_are_clear(tmp_path):
    from shardex.auth import KeyStore

    store = KeyStore(tmp_path / "keys")
    one = store.add("alice", "trader", ["alice"])
    two = store.add("desk", "trader", ["mm1", "mm2"])
    with Client("tcp://127.0.0.1:5555", key=one) as c:
        assert c.account == "alice" and c.key.name == "alice"
    with Client("tcp://127.0.0.1:5555", key=one, account="other") as c:
        assert c.account == "other"  # an explicit account is kept (the shard decides)
    with Client("tcp://127.0.0.1:5555", key=two) as c:
        assert c.account is None  # two accounts: the caller must say which
    with pytest.raises(ShardexError, match="not found"):
        Client("tcp://127.0.0.1:5555", key=tmp_path / "nope.key")
    bad = tmp_path / "bad.key"
    bad.write_text("not json")
    with pytest.raises(ShardexError, match="not a shardex key file"):
        AsyncClient("tcp://127.0.0.1:5555", key=bad)
    assert "secret" not in repr(store.server()) and store.server().secret not in repr(
        store.server()
    )


def test_a_key_on_an_insecure_peer_is_a_clear_error_not_a_bare_timeout(tmp_path):
    from shardex.auth import KeyStore
    from shardex.client import AuthenticationFailed

    store = KeyStore(tmp_path / "keys")
    store.init()
    with (
        StandIn(shard_like(DEFAULT_MARKETS)) as si,  # a plain (NULL security) peer
        pytest.raises(AuthenticationFailed, match="handshake failed"),
        Client(si.endpoint, key=store.dir / "admin.key", timeout=1) as c,
    ):
        c.topology()

"""The account tier's tools: ``shardex loadgen`` on a cluster with accounts (funding first,
``--risk on|off``). (``AsyncClient`` transfers and balances: tests/unit/test_inproc_accounts.py.)

One real ``shardex up --accounts 2`` cluster (CURVE keys) for the module; tiny loads.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardex.accounts.assets import AssetTable
from shardex.client import audit_report
from shardex.engine import DEFAULT_MARKETS
from shardex.engine.codes import OP_NEW
from shardex.node.accounts import AccountHandler
from shardex.tools.loadgen import (
    LoadConfig,
    LoadError,
    format_report,
    fund_target_units,
    resolve_risk,
    run,
)
from shardex.wire.protocol import OP_BALANCE, OP_EVENTS, OP_STATUS, VERSION, encode_request
from tests.support.accounts import accounts_cluster
from tests.support.metrics import scrape

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster():
    cl = accounts_cluster(1, 2)
    try:
        yield cl
    finally:
        cl.stop()


def test_resolve_risk_says_what_works_where():
    cfg = LoadConfig(endpoint="tcp://127.0.0.1:5555", orders=1, duration=None, key="none")
    assert resolve_risk(cfg, {"shards": 1}) == ("off", 0)  # auto, no accounts: unchanged
    assert resolve_risk(cfg, {"shards": 1, "accounts": 2}) == ("on", 2)
    off = LoadConfig(endpoint="tcp://127.0.0.1:5555", orders=1, duration=None, risk="off")
    with pytest.raises(LoadError, match="--risk off sends orders straight to the engine"):
        resolve_risk(off, {"shards": 1, "accounts": 2})
    on = LoadConfig(endpoint="tcp://127.0.0.1:5555", orders=1, duration=None, risk="on")
    with pytest.raises(LoadError, match="needs a cluster with account shards"):
        resolve_risk(on, {"shards": 1, "accounts": 0})
    direct = LoadConfig(
        endpoint="tcp://127.0.0.1:5555", orders=1, duration=None, risk="on", direct=True
    )
    assert resolve_risk(direct, {"shards": 1, "accounts": 1}) == ("on", 1)  # (it was refused)
    with pytest.raises(LoadError, match="--risk must be on, off or auto"):
        LoadConfig(endpoint="tcp://127.0.0.1:5555", orders=1, duration=None, risk="maybe")


def test_loadgen_funds_its_accounts_and_goes_through_the_account_tier(cluster):
    cfg = LoadConfig(
        endpoint=cluster.endpoint, orders=400, duration=None, accounts=6, key=str(cluster.key),
        batch=20, window=4, timeout=10,
    )  # fmt: skip
    before = scrape(cluster.layout.shard_metrics_port(0))
    rep = run(cfg).to_dict()
    after = scrape(cluster.layout.shard_metrics_port(0))
    assert rep["config"]["risk"] == "on" and rep["config"]["account_shards"] == 2
    # 6 accounts × the assets of the two traded markets (BTC-USD, ETH-USD: BTC, ETH, USD)
    assert rep["config"]["funded"] == 18
    assert rep["sent"] == rep["acked"] == 400 and not rep["errors"]
    assert "insufficient_funds" not in rep["rejected"], rep["rejected"]
    # the account tier answers new/amend before matching ("held and forwarded", no events);
    # what matched is counted from the engine shards' events of this run's orders (before:
    # "accepted 0  trades 0" on every default cluster)
    assert rep["held"] > 0 and rep["accepted"] > 0 and rep["trades"] > 0, rep
    assert rep["counted_from"] == "events" and rep["fills"] >= rep["trades"], rep
    assert rep["events_lost"] == 0 and rep["trades_per_s"] > 0, rep
    # exactly what the engine shard counted meanwhile (nothing else traded)
    for metric, field in (("trades", "trades"), ("orders_accepted", "accepted"),
                          ("orders_cancelled", "cancelled")):  # fmt: skip
        name = f"shardex_{metric}_total"
        assert after[name] - before.get(name, 0) == rep[field], (metric, rep)
    lines = format_report(rep)
    assert lines[1].startswith(f"accepted {rep['accepted']:,}  trades {rep['trades']:,}"), lines
    assert "counted from the engine shards' events" in lines[2], lines
    # the money is where the deposits put it, and the books balance once settlements land
    target = fund_target_units(6)
    table = AssetTable(DEFAULT_MARKETS)
    with cluster.client() as c:
        deadline = time.monotonic() + 15
        while True:
            lines, ok = audit_report(c.audit())
            if ok or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert ok, lines
        for i in range(6):
            bal = c.balance(f"acct-{i}")
            assert set(bal) >= {"BTC", "ETH", "USD"}
            assert all(a >= 0 and h >= 0 for a, h in bal.values())
        # a second run tops up to the same target again (never above it)
        rep2 = run(LoadConfig(**{**cfg.__dict__, "orders": 40})).to_dict()
        assert rep2["acked"] == 40 and not rep2["errors"]
        for i in range(6):
            total = sum(table.to_units(a, sum(v)) for a, v in c.balance(f"acct-{i}").items())
            assert total > 0
    assert target > 0


def test_loadgen_direct_goes_straight_to_the_account_shards(cluster):
    """Regression: ``--direct`` (a README example) failed on every default cluster with
    "cannot be used with --risk on". New/amend now go to their account shard's direct port,
    cancels to the engine shard's; the report counts what matched from the events."""
    out = subprocess.run(
        [sys.executable, "-m", "shardex.cli", "loadgen", "--endpoint", cluster.endpoint,
         "--orders", "300", "--direct", "--accounts", "4", "--batch", "20", "--window", "4",
         "--key", str(cluster.key), "--quiet", "--json"],
        capture_output=True, text=True, timeout=90, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["config"]["direct"] and rep["config"]["risk"] == "on", rep
    assert rep["sent"] == rep["acked"] == 300 and not rep["errors"], rep
    assert rep["held"] > 0 and rep["accepted"] > 0 and rep["events_lost"] == 0, rep
    assert "not_allowed" not in rep["rejected"], rep["rejected"]


def test_account_shard_direct_port_tells_clients_from_the_bridge():
    assert AccountHandler.for_clients(encode_request([(OP_NEW, "BTC-USD", "o1", "a", 0, 0, 1, 1,
                                                       0, 0, 0)]))  # fmt: skip
    assert AccountHandler.for_clients(encode_request([(OP_BALANCE, "a")]))
    for bridge in ([(OP_STATUS,)], [(OP_EVENTS, 1, 3)], [(99,)], []):
        assert not AccountHandler.for_clients(encode_request(bridge))
    assert not AccountHandler.for_clients(b"garbage")
    # a peer's first "op" may be anything: a dict crashed the account shard (unhashable)
    for odd in ({"op": 1}, [1], None, 1.5, "x", 2**64 - 1):
        assert not AccountHandler.for_clients(encode_request([(odd, "a")]))


_any = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
              st.text(max_size=8),
              st.binary(max_size=8)),  # fmt: skip
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=4), inner, max_size=3)),  # fmt: skip
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(payload=st.one_of(st.binary(max_size=60), _any.map(msgpack.packb),
                         st.lists(_any, max_size=3).map(lambda c: msgpack.packb([VERSION, c]))))
def test_account_shard_direct_port_sorting_never_raises(payload):  # fmt: skip
    assert AccountHandler.for_clients(payload) in (True, False)


def test_loadgen_cli_risk_off_on_an_accounts_cluster_is_refused_clearly(cluster):
    out = subprocess.run(
        [sys.executable, "-m", "shardex.cli", "loadgen", "--endpoint", cluster.endpoint,
         "--orders", "10", "--risk", "off", "--key", str(cluster.key), "--quiet"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 1
    assert "--risk off sends orders straight to the engine shards" in out.stderr
    assert "use --risk on" in out.stderr


def test_sigterm_stops_an_engine_shard_with_an_account_link():
    """Regression: the engine shard's account link socket was never closed, so its
    ``ctx.term()`` blocked and SIGTERM only ended it by the supervisor's SIGKILL 5 s later."""
    cl = accounts_cluster(1, 1)
    cl.stop()
    text = cl.log_path.read_text(errors="replace")
    assert "shard 0 stopped" in text
    assert "ignored SIGTERM" not in text

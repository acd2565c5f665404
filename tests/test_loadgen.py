"""Load generator: config validation, the one workload generator, fates of timeouts (stand-in
cluster), and on the real cluster a full report and Ctrl-C/SIGTERM returning a partial one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_client import StandIn, shard_like

from shardex.engine import DEFAULT_MARKETS
from shardex.engine.codes import OP_NEW
from shardex.tools.loadgen import (
    DEFAULT_MIX,
    FATES,
    LoadConfig,
    LoadError,
    Progress,
    run,
)
from shardex.tools.workload import DEFAULT_MIX_TEXT, Workload
from shardex.wire.protocol import markets_to_wire

ROOT = Path(__file__).resolve().parent.parent
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
        return {"state": "live" if n == 0 else "unknown", "symbol": c[1], "id": c[3], "seq": 1}

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
        )
        rep = run(cfg, on_progress=seen.append)
    d = rep.to_dict()
    assert d["timeouts"] == 80 and d["sent"] == 400 and d["acked"] == 320
    assert sum(d["fates"].values()) == 80 and set(d["fates"]) == set(FATES)
    assert all(d["fates"][k] > 0 for k in FATES), d["fates"]
    assert not d["interrupted"] and d["config"]["orders"] == 400
    assert seen and seen[-1].timeouts > 0


def test_real_cluster_report_and_config(cluster2) -> None:
    seen: list[Progress] = []
    cfg = LoadConfig(
        endpoint=cluster2.endpoint,
        orders=3000,
        duration=None,
        procs=2,
        symbols=3,
        key=str(cluster2.key),  # the admin key: loadgen's accounts acct-N are nobody's own
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
def test_interrupt_returns_the_partial_report(cluster1, how: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, cluster1.endpoint, str(cluster1.key)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        cwd=ROOT,
    )
    try:
        time.sleep(3.0)
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


def test_loadgen_without_the_clusters_key_is_one_clear_error(cluster1) -> None:
    with pytest.raises(LoadError, match="handshake failed"):
        run(LoadConfig(endpoint=cluster1.endpoint, orders=10, duration=None, key="none"))
    with pytest.raises(LoadError, match="not found"):
        LoadConfig(endpoint=cluster1.endpoint, key=str(Path(cluster1.data_dir) / "nope.key"))

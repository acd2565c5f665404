"""The port story: ``shardex up`` records its endpoints in DATA_DIR/endpoints.json and every
command and the SDK find them there; explicit flags win; connection errors name the endpoint,
where it came from and the likely cause; every env var a command reads is in its ``--help``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from shardex import endpoints
from shardex.cli import main
from shardex.client import Client, ClientCore
from shardex.layout import Layout
from tests.support.cli import invoke_cli
from tests.support.cluster import ROOT, Cluster
from tests.support.ports import free_layout


def _layout() -> Layout:
    return Layout("127.0.0.1", 8300, shards=2, routers=2, accounts=1)


def test_record_write_read_round_trip_atomic(tmp_path: Path) -> None:
    rec = endpoints.record(_layout(), redis_url="redis://127.0.0.1:8304/0", pid=42, now=1.0)
    path = endpoints.write(tmp_path, rec)
    assert path == tmp_path / "endpoints.json"
    assert endpoints.read(tmp_path) == rec
    assert rec["router"] == "tcp://127.0.0.1:8300,tcp://127.0.0.1:8311"
    assert rec["shards"][1]["direct"] == "tcp://127.0.0.1:8401"
    assert rec["accounts"][0]["direct"] == "tcp://127.0.0.1:9000"
    assert [p.name for p in tmp_path.iterdir()] == ["endpoints.json"]  # no temp file left


def test_redis_password_never_recorded() -> None:
    rec = endpoints.record(_layout(), redis_url="redis://u:secret@h:1/0")
    assert rec["redis"] is None and "secret" not in json.dumps(rec)


def test_mark_stopped_only_by_the_up_that_wrote_it(tmp_path: Path) -> None:
    endpoints.write(tmp_path, endpoints.record(_layout(), pid=42, now=1.0))
    endpoints.mark_stopped(tmp_path, pid=43)  # another up's stop: not ours to mark
    assert endpoints.read(tmp_path)["state"] == "running"
    endpoints.mark_stopped(tmp_path, pid=42, now=2.0)
    rec = endpoints.read(tmp_path)
    assert rec["state"] == "stopped" and rec["stopped_at"] == 2.0
    assert "was stopped" in endpoints.staleness(rec)


def test_staleness_of_a_killed_up() -> None:
    rec = endpoints.record(_layout(), pid=42)
    assert endpoints.staleness(rec, pid_alive=lambda pid: True) is None
    assert endpoints.staleness(rec, pid_alive=lambda pid: False) == (
        "its shardex up (pid 42) is not running"
    )


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARDEX_DATA_DIR", str(tmp_path))
    assert endpoints.find_router().endpoint == "tcp://127.0.0.1:5555"  # no file: the default
    assert "no " in endpoints.find_router().source
    endpoints.write(tmp_path, endpoints.record(_layout(), pid=os.getpid()))
    found = endpoints.find_router()
    assert found.endpoint == "tcp://127.0.0.1:8300,tcp://127.0.0.1:8311"
    assert found.source == str(tmp_path / "endpoints.json") and found.stale is None
    assert endpoints.find_router(base_port=7000).endpoint == "tcp://127.0.0.1:7000"
    assert endpoints.find_router(host="10.0.0.1").endpoint == "tcp://10.0.0.1:5555"
    assert endpoints.find_router("tcp://h:1", 2, 3).endpoint == "tcp://h:1"  # explicit wins
    assert endpoints.find_redis().endpoint == "redis://127.0.0.1:8304/0"
    other = tmp_path / "other"
    assert endpoints.find_router(data_dir=other).endpoint == "tcp://127.0.0.1:5555"


def test_a_broken_file_is_said_not_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "endpoints.json").write_text("{not json")
    monkeypatch.setenv("SHARDEX_DATA_DIR", str(tmp_path))
    with pytest.raises(endpoints.EndpointsFileError, match="endpoints.json is not valid JSON"):
        endpoints.find_router()
    res = CliRunner().invoke(main, ["status", "--key", "none"])
    assert res.exit_code == 1 and "endpoints.json is not valid JSON" in res.output


def test_sdk_client_without_endpoint_uses_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHARDEX_DATA_DIR", str(tmp_path))
    endpoints.write(tmp_path, endpoints.record(_layout(), pid=os.getpid()))
    core = ClientCore(key=False)
    assert core.endpoint == "tcp://127.0.0.1:8300,tcp://127.0.0.1:8311"
    assert "endpoints.json" in core.endpoint_source
    assert ClientCore("tcp://h:9", key=False).endpoint == "tcp://h:9"


def test_explain_names_endpoint_source_and_cause() -> None:
    port = free_layout(1).base_port  # nothing listens there
    found = endpoints.Found(f"tcp://127.0.0.1:{port}", "data/endpoints.json", "that cluster was "
                            "stopped")  # fmt: skip
    msg = endpoints.explain("cannot reach x within 1s", found)
    assert f"nothing is listening at tcp://127.0.0.1:{port}" in msg
    # a client with a key adds the key as a suspect; nothing listening rules that out
    suspects = " (no reply: wrong or revoked key, or cluster down)"
    msg = endpoints.explain("cannot reach x within 1s" + suspects, found)
    assert "nothing is listening" in msg and "revoked key" not in msg
    assert "from data/endpoints.json; that cluster was stopped" in msg
    msg = endpoints.explain("security handshake failed: ...", found)
    assert "another cluster at that port (the wrong port?) or the wrong key" in msg


def test_keys_add_prints_the_recorded_endpoint(tmp_path: Path) -> None:
    endpoints.write(tmp_path, endpoints.record(Layout(base_port=8300), pid=1))
    res = CliRunner().invoke(main, ["keys", "add", "--account", "alice", "--data-dir",
                                    str(tmp_path)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert 'Client("tcp://127.0.0.1:8300", key=' in res.output
    assert "5555" not in res.output


@pytest.mark.parametrize(
    "cmd, names",
    [
        (["status"], ["SHARDEX_BASE_PORT", "SHARDEX_HOST", "SHARDEX_ENDPOINT", "SHARDEX_KEY",
                      "SHARDEX_DATA_DIR"]),  # fmt: skip
        (["up"], ["SHARDEX_BASE_PORT", "SHARDEX_DATA_DIR", "SHARDEX_FSYNC", "SHARDEX_GC",
                  "SHARDEX_SNAPSHOT_EVERY", "SHARDEX_SNAPSHOT_INTERVAL"]),  # fmt: skip
        (["engine"], ["SHARDEX_SHARD", "SHARDEX_ENGINE", "SHARDEX_JOURNAL_WRITER"]),
        (["accounts"], ["SHARDEX_LINK_RING", "SHARDEX_ACCOUNTS", "SHARDEX_SNAPSHOT_EVERY",
                        "SHARDEX_SNAPSHOT_INTERVAL"]),  # fmt: skip
        (["engine"], ["SHARDEX_SNAPSHOT_EVERY", "SHARDEX_SNAPSHOT_INTERVAL"]),
        (["deposit"], ["SHARDEX_BASE_PORT", "SHARDEX_KEY"]),
        (["tail"], ["SHARDEX_BASE_PORT", "SHARDEX_DATA_DIR", "SHARDEX_REDIS_URL"]),
    ],
)
def test_help_documents_every_env_var(cmd: list[str], names: list[str]) -> None:
    out = CliRunner().invoke(main, [*cmd, "--help"], terminal_width=200).output
    for name in names:
        assert name in out, f"{name} missing from shardex {cmd[0]} --help"


def _cli(
    *args: str, env: dict[str, str], cwd: str, real: bool = False
) -> subprocess.CompletedProcess:
    """``shardex ARGS`` in ``cwd`` with exactly ``env``: as ``python -m shardex.cli`` (``real``)
    or in this process (click's runner, the environment's differences applied for the run)."""
    if real:
        return subprocess.run([sys.executable, "-m", "shardex.cli", *args], capture_output=True,
                              text=True, env=env, cwd=cwd, timeout=60)  # fmt: skip
    changes: dict[str, str | None] = {k: None for k in os.environ if k not in env}
    changes.update({k: v for k, v in env.items() if os.environ.get(k) != v})
    before = os.getcwd()
    os.chdir(cwd)
    try:
        res = invoke_cli(*args, env=changes)
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(res.args, res.returncode, res.stdout.decode(),
                                       res.stderr.decode())  # fmt: skip


def test_commands_find_a_cluster_on_another_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real cluster on a random base port: status (no flags), the SDK's Client(), a wrong
    port and a refused key both name the endpoint and cause; after a clean stop, stale."""
    data = tempfile.mkdtemp(prefix="shardex-endpoints-")
    cluster = Cluster(1, data_dir=data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDEX_")}
    env |= {"SHARDEX_DATA_DIR": data, "PYTHONPATH": str(ROOT)}
    try:
        rec = json.loads((Path(data) / "endpoints.json").read_text())
        assert rec["router"] == cluster.endpoint and rec["state"] == "running"
        res = _cli("status", env=env, cwd=data, real=True)
        assert res.returncode == 0 and "1 shard(s)" in res.stdout, res.stderr
        assert "pairs ADA-USD, BTC-USD, DOGE-USD" in res.stdout  # the pairs per shard
        monkeypatch.setenv("SHARDEX_DATA_DIR", data)
        with Client(key=cluster.key, timeout=5.0) as c:  # no endpoint: the file's
            assert c.topology()["shards"] == 1
        res = _cli("status", "--key", "none", env=env, cwd=data)  # a secure cluster, no key
        assert res.returncode == 1
        assert f"endpoint {cluster.endpoint} (from {data}/endpoints.json)" in res.stderr
        assert "refused this client" in res.stderr
        wrong = free_layout(1).base_port
        res = _cli("status", "--base-port", str(wrong), "--timeout", "1", env=env, cwd=data)
        assert res.returncode == 1 and "Traceback" not in res.stderr
        assert f"nothing is listening at tcp://127.0.0.1:{wrong}" in res.stderr
    finally:
        cluster.stop()
    try:
        assert json.loads((Path(data) / "endpoints.json").read_text())["state"] == "stopped"
        res = _cli("status", "--timeout", "1", env=env, cwd=data)
        assert res.returncode == 1 and "that cluster was stopped" in res.stderr
    finally:
        import shutil

        shutil.rmtree(data, ignore_errors=True)


def test_pairs_by_shard_and_the_idle_shard_warning() -> None:
    from shardex.config import load_markets
    from shardex.layout import idle_shards_warning, pairs_by_shard
    from shardex.wire.protocol import shard_for

    markets = load_markets(None)
    by = pairs_by_shard(markets, 4)
    assert sorted(sum(by, [])) == sorted(markets)
    assert all(shard_for(s, 4) == i for i, pairs in enumerate(by) for s in pairs)
    assert by[3] == [] and "shard(s) 3 own none" in idle_shards_warning(markets, 4)
    assert idle_shards_warning(markets, 3) is None and idle_shards_warning(markets, 2) is None
    pinned = pairs_by_shard(markets, 4, lambda s: 3 if s == "BTC-USD" else shard_for(s, 4))
    assert pinned[3] == ["BTC-USD"]  # by the placement map's owner when given


def test_up_says_at_start_that_a_shard_owns_no_pair() -> None:
    """Regression: ``shardex up --shards 3`` left shard 1 without any built-in pair, silently
    (crc32 % N; the rendezvous default leaves shard 3 of 4 without one).
    (A taken port stops this start right after the warning: no cluster needed.)"""
    import socket

    layout = free_layout(4)
    with socket.socket() as s:
        s.bind(("127.0.0.1", layout.base_port))
        s.listen()
        res = subprocess.run(
            [sys.executable, "-m", "shardex.cli", "up", "--shards", "4", "--base-port",
             str(layout.base_port), "--ephemeral", "--no-bridge", "--insecure"],
            capture_output=True, text=True, timeout=60, cwd=tempfile.gettempdir(),
        )  # fmt: skip
    assert res.returncode == 1 and "ports already in use" in res.stderr
    assert "shard(s) 3 own none of the markets" in res.stderr


def test_a_base_port_out_of_range_is_one_line() -> None:
    """(It was a ValueError traceback.)"""
    res = CliRunner().invoke(main, ["status", "--base-port", "80", "--key", "none"])
    assert res.exit_code == 2 and "base port must be 1024.." in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_in_use_only_while_its_up_runs(tmp_path: Path) -> None:
    endpoints.write(tmp_path, endpoints.record(_layout(), pid=42))
    live = {"pid_alive": lambda pid: True, "runs_shardex": lambda pid: True}
    assert "shardex up (pid 42) runs a cluster on it" in endpoints.in_use(tmp_path, **live)
    assert endpoints.in_use(tmp_path, pid_alive=lambda pid: False) is None  # killed
    assert endpoints.in_use(tmp_path, live["pid_alive"], lambda pid: False) is None  # pid reused
    endpoints.mark_stopped(tmp_path, pid=42)
    assert endpoints.in_use(tmp_path, **live) is None  # stopped cleanly


def test_a_killed_unreaped_up_is_not_running() -> None:
    """A zombie answers signal 0: a kill -9'd ``up`` whose parent had not reaped it yet was
    taken for a running cluster."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = 0
        while Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            deadline += 1
            assert deadline < 10_000, "the child never exited"
            os.sched_yield()
        assert endpoints._pid_alive(proc.pid) is False
    finally:
        proc.wait(10)
    assert endpoints._pid_alive(os.getpid()) is True


def test_up_refuses_a_data_dir_another_up_runs_on(tmp_path: Path) -> None:
    """Two ``shardex up`` on one data dir (another --base-port) both started and both wrote
    every journal; the second now refuses before starting anything."""
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "shardex"])
    try:
        endpoints.write(tmp_path, endpoints.record(_layout(), pid=holder.pid))
        port = free_layout(1).base_port
        up = subprocess.Popen([sys.executable, "-m", "shardex.cli", "up", "--data-dir",
                               str(tmp_path), "--base-port", str(port), "--shards", "1",
                               "--no-bridge", "--accounts", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            out, _ = up.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # it started a second cluster: stop it whole
            os.killpg(up.pid, 9)
            up.wait(10)
            pytest.fail("a second shardex up started on a data dir another one runs on")
        assert up.returncode == 1, out
        assert f"shardex up (pid {holder.pid}) runs a cluster on it" in out.decode(), out
        assert not (tmp_path / "shard-0").exists()  # nothing started
    finally:
        holder.kill()
        holder.wait(10)


def test_no_help_text_cites_an_issue_number() -> None:
    """``up --help`` said "(issue 15; needs Redis)": tracker numbers mean nothing to a user."""
    for name in main.load_all():
        out = CliRunner().invoke(main, [name, "--help"], terminal_width=200).output
        assert re.search(r"\bissue \d", out) is None, f"shardex {name} --help: {out}"

"""The ``shardex`` command line as a new user meets it: bad input is one line and an exit code,
never a traceback or a silent default; tail, loadgen and the embedded Redis say what they do.

Messages and exit codes of bad input are checked in this process (``invoke_cli``: click's
runner, the same code from argv to exit status); ``python -m shardex.cli`` itself runs where
the entry point or a running process is the point (one bad-input case, tail, loadgen, Ctrl-C,
the embedded Redis, every command's --help with warnings as errors)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require

from shardex.cli import _seq_range
from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.codes import BUY, GTC, LIMIT, OP_NEW, STP_NONE
from shardex.journal import Journal
from tests.support.cli import invoke_cli
from tests.support.cluster import ROOT, Cluster
from tests.support.ports import free_layout
from tests.support.wait import wait_until


def cli(*args: str, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shardex.cli", *args],
        capture_output=True,
        timeout=timeout,
        cwd=ROOT,
        **kw,
    )


def one_line_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == code, (proc.returncode, err)
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)
    return err


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster(1, redis="embedded")
    try:
        yield c
    finally:
        c.stop()


# ------------------------------------------------------------------------------ bad input


def test_shards_zero_is_an_error_not_auto():
    layout = free_layout(1)
    where = ("--base-port", str(layout.base_port))
    # the installed entry point prints the same one line as the commands run in this process
    one_line_error(cli("up", "--shards", "0", *where, "--ephemeral"), 2, "--shards must be 1..100")
    for args in (
        ("up", "--shards", "0", *where, "--ephemeral"),
        ("up", "--shards", "lots", *where, "--ephemeral"),
    ):
        one_line_error(invoke_cli(*args), 2, "--shards must be 1..100 or 'auto'")
    proc = invoke_cli("router", "--shards", "0", *where)
    assert proc.returncode == 2 and b"--shards must be 1..100" in proc.stderr
    assert "auto" in invoke_cli("up", "--help").stdout.decode()


@pytest.mark.parametrize(
    "args",
    [
        ("status", "--endpoint", "localhost:5555"),
        ("book", "BTC-USD", "--endpoint", "localhost:5555"),
        ("loadgen", "--endpoint", "127.0.0.1:5555", "--duration", "1"),
        ("bridge", "--endpoint", "tcp://127.0.0.1:notaport"),
        ("router", "--frontend", "tcp://127.0.0.1"),
        ("engine", "--shard", "0", "--pub", "udp://127.0.0.1:1"),
    ],
)
def test_bad_endpoint_is_one_line_exit_2(args):
    one_line_error(invoke_cli(*args), 2, "bad endpoint", "expected tcp://HOST:PORT")


def test_loadgen_duration_must_be_positive():
    ep = free_layout(1).frontend
    for args, needle in (
        (("--duration", "0"), "--duration must be > 0"),
        (("--duration", "-3"), "must be > 0"),
        (("--orders", "0"), "--orders must be >= 1"),
    ):
        one_line_error(invoke_cli("loadgen", "--endpoint", ep, *args), 1, needle)


# ------------------------------------------------------------------------------ tail


def test_tail_unknown_symbol_is_refused_at_once(cluster):
    where = ["--base-port", str(cluster.layout.base_port), "--data-dir", cluster.data_dir]
    one_line_error(invoke_cli("tail", "NOPE-USD", *where), 1, "unknown symbol 'NOPE-USD'")
    # the cluster's Redis has no anonymous access: a URL without credentials is one line too
    one_line_error(
        invoke_cli("tail", "BTC-USD", "--redis-url", cluster.layout.redis_url, "--count", "1"), 1
    )


def test_tail_says_it_waits_then_prints_json_with_ints_and_time(cluster):
    tail = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shardex.cli",
            "tail",
            "LTC-USD",
            "--base-port",
            str(cluster.layout.base_port),
            "--data-dir",  # reads as Redis user reader, password from DATA_DIR/keys
            cluster.data_dir,
            "--json",
            "--count",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        first = tail.stderr.readline().decode()
        assert first.startswith("waiting for the first LTC-USD trade"), first
        before = time.time()
        with cluster.client(account="a") as c:
            assert c.place("LTC-USD", "sell", "1", "70", id="s").ok
            assert c.place("LTC-USD", "buy", "1", "70", id="b", account="b").trades
        out, err = tail.communicate(timeout=20)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    assert tail.returncode == 0, err
    (rec,) = [json.loads(line) for line in out.decode().splitlines()]
    assert rec["symbol"] == "LTC-USD" and rec["price"] == "70.00" and rec["qty"] == "1.000"
    assert type(rec["trade_id"]) is int and type(rec["seq"]) is int and type(rec["shard"]) is int
    assert rec["trade_id"] == 1 and rec["id"] == f"{rec['seq']}-0"
    read_at = time.mktime(time.strptime(rec["read_at"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert before - 2 <= read_at <= time.time() + 2 and rec["read_at"].endswith("Z")


# ------------------------------------------------------------------------------ loadgen


def test_loadgen_progress_line_shows_timeouts(cluster):
    proc = cli(
        "loadgen", "--endpoint", cluster.endpoint, "--duration", "3", "--rate", "500",
        *cluster.key_args(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"timeouts 0" in proc.stderr


def test_loadgen_ctrl_c_exits_130_without_traceback(cluster, tmp_path):
    out = tmp_path / "report.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shardex.cli",
            "loadgen",
            "--endpoint",
            cluster.endpoint,
            "--rate",
            "500",
            "--duration",
            "60",
            "--out",
            str(out),
            *cluster.key_args(),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            if os.read(proc.stderr.fileno(), 4096):  # the progress line: generators are running
                break
        with cluster.client() as c:  # interrupted once orders flow
            wait_until(lambda: (c.status()[0].get("commands") or 0) >= 100, 30, "orders sent")
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = stderr.decode()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "interrupted" in err, err
    rep = json.loads(out.read_text())
    assert rep["interrupted"] is True and rep["sent"] > 0
    assert b"sent" in stdout and b"latency" in stdout


# ------------------------------------------------------------------------------ embedded redis


def test_embedded_redis_output_has_no_overcommit_warning_but_keeps_the_rest(cluster):
    require(
        Path("/proc/sys/vm/overcommit_memory").read_text().strip() != "1",
        "vm.overcommit_memory=1: the server has no warning to filter here",
    )
    # shardex up's supervisor
    assert "Memory overcommit" not in cluster.output()
    # shardex redis (the Procfile's process): other lines still pass
    layout = free_layout(1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardex.cli", "redis", "--base-port", str(layout.base_port),
         "--insecure"],  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        import redis

        r = redis.Redis(port=layout.redis_port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15
        while True:
            try:
                assert r.ping()
                break
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "embedded redis did not start"
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert b"Memory overcommit" not in out
    assert b"ready to exit" in out  # the filter drops one line, not the server's output


# ------------------------------------------------------------------------------ journal inspect


def test_journal_inspect_does_not_show_record_seqs_as_event_seqs(tmp_path):
    j = Journal(tmp_path, DEFAULT_MARKETS)
    engine = Engine(DEFAULT_MARKETS)
    out: list = []
    for k in range(5):
        cmd = (OP_NEW, "BTC-USD", f"o{k}", "a", BUY, LIMIT, 100 + k, 1, GTC, False, STP_NONE)
        j.add(engine.seq, cmd)
        engine.apply(cmd, out)
        j.commit()
    j.close()
    proc = invoke_cli("journal", "inspect", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode()
    # engine seq is 5 after five accepted orders; the old table said "seq 0..4"
    assert "commands  seq 0..4" not in text
    info = json.loads(invoke_cli("journal", "inspect", str(tmp_path), "--json").stdout)
    seg = info["segments"][0]
    if seg.get("first_event_seq") is not None:
        assert f"events seq 1..{engine.seq}" in text
    else:
        assert "records after seq 0..4" in text


def test_seq_range_labels():
    assert _seq_range({"first_seq": 0, "last_seq": 1036027}) == "records after seq 0..1036027"
    assert (
        _seq_range({"first_seq": 0, "last_seq": 9, "first_event_seq": 1, "last_event_seq": 12})
        == "events seq 1..12"
    )
    assert _seq_range({"first_seq": None, "last_seq": None}) == "no records"


# ------------------------------------------------------------------------------ honcho helpers


def test_honcho_concurrency_reads_the_parent_honcho_command_line():
    from shardex.node.honcho import honcho_concurrency, honcho_index

    fake = subprocess.Popen(
        [
            "bash",
            "-c",
            # the real interpreter, not a shim (pyenv's would exec again and lose argv[0])
            f'exec -a /usr/bin/honcho {sys.executable} -c "import time; time.sleep(30)" '
            "-c engine=3,bridge=1",
        ]
    )
    try:
        deadline = time.monotonic() + 10
        # bash's own command line mentions honcho too: wait for the exec itself
        while not Path(f"/proc/{fake.pid}/cmdline").read_bytes().startswith(b"/usr/bin/honcho"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert honcho_concurrency("engine", pid=fake.pid) == 3
        assert honcho_concurrency("router", pid=fake.pid) == 1  # under honcho, no -c for it
    finally:
        fake.kill()
        fake.wait()
    assert honcho_concurrency("engine", pid=os.getpid()) is None  # pytest is not honcho
    assert honcho_index({"HONCHO_PROCESS_NAME": "engine.3"}) == 2
    assert honcho_index({"HONCHO_PROCESS_NAME": "bridge"}) is None


# Every command's --help in one interpreter (one start instead of one per command): the
# commands load lazily, so each one's modules are imported, and each import's warnings raised,
# when its --help runs; a failing command prints its name before the traceback.
HELP_ALL = """
import sys
from shardex.cli import main
for c in sys.argv[1:]:
    print("== command", c or "(none)", file=sys.stderr, flush=True)
    code = main.main(args=[*([c] if c else []), "--help"], prog_name="shardex",
                     standalone_mode=False)
    assert code in (0, None), (c, code)
"""


def test_no_command_emits_deprecation_warnings():
    """A fresh install may get a newer click: a DeprecationWarning printed by the CLI (run as
    __main__, so Python shows it) once broke `tail`'s first line (the tail tests above cover that
    runtime path). Every command's --help must also run clean with warnings as errors."""
    cmds = ["", "up", "router", "engine", "bridge", "loadgen", "tail", "status", "book", "keys",
            "replay", "journal", "redis"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", HELP_ALL, *cmds],
        capture_output=True,
        timeout=60,
        cwd=ROOT,
    )
    err = proc.stderr.decode()
    assert proc.returncode == 0, err[-1500:]
    assert "Warning" not in err, err[-1500:]
    assert proc.stdout.decode().count("Usage: shardex") == len(cmds)  # each --help printed

"""README's examples run as pasted, against a real cluster started here, so the docs cannot drift.

Only ports change (the examples use the default layout; the test cluster runs on free ports):
the Python blocks get the cluster's endpoint and Redis port, the shell lines run with
``SHARDEX_BASE_PORT`` set, in a directory whose ``data`` is the cluster's data dir.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardex.config import load_markets
from tests.support.cluster import ROOT, Cluster

README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
# shell commands that run and end by themselves against a cluster (tail follows and loadgen runs
# for seconds; `up` starts a cluster of its own): each is run exactly as written
RUNNABLE = ("status", "book", "journal", "replay")


def blocks(lang: str) -> list[str]:
    return [body for kind, body in BLOCK.findall(README) if kind == lang]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("readme")


@pytest.fixture(scope="module")
def cluster(workdir) -> Iterator[Cluster]:
    c = Cluster(1, redis="embedded", data_dir=str(workdir / "data"), accounts=1)  # up's default
    try:
        yield c
    finally:
        c.stop()


def env_for(cluster: Cluster) -> dict[str, str]:
    """As a user's shell in the cluster's directory: no SHARDEX_KEY (conftest sets "none"), so
    commands and examples find ./data/keys/admin.key by themselves, as the README promises."""
    env = {k: v for k, v in os.environ.items() if k != "SHARDEX_KEY"}
    return {**env, "SHARDEX_BASE_PORT": str(cluster.layout.base_port)}


def test_python_examples_run_as_pasted(cluster, workdir):
    examples = blocks("python")
    assert len(examples) >= 3
    # the Identity section's example uses the key its `shardex keys add` line creates
    add = subprocess.run(
        [sys.executable, "-m", "shardex.cli", "keys", "add", "--account", "alice"],
        capture_output=True,
        timeout=30,
        cwd=workdir,
        env=env_for(cluster),
    )
    assert add.returncode == 0, add.stderr.decode()
    outputs = []
    for code in examples:
        assert "tcp://127.0.0.1:5555" in code or "port=5559" in code, code
        code = code.replace("tcp://127.0.0.1:5555", cluster.endpoint).replace(
            "port=5559", f"port={cluster.layout.redis_port}"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            timeout=60,
            cwd=workdir,
            env=env_for(cluster),
        )
        assert proc.returncode == 0, f"README example failed:\n{code}\n{proc.stderr.decode()}"
        outputs.append(proc.stdout.decode())
    sdk, identity, consumer = outputs[0], outputs[1], outputs[2]
    assert "301 of 301 ok" in sdk
    assert identity.splitlines() == ["True", "account bob not allowed for this key"], identity
    # the SDK example's BTC-USD trade reached the consumer group through the bridge
    assert "booked 1 0.1000 @ 30000.50" in consumer


def shell_lines() -> list[str]:
    lines = []
    for body in blocks("sh"):
        for line in body.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("shardex "):
                lines.append(line)
    return lines


def test_every_shell_command_exists_and_the_runnable_ones_run(cluster, workdir):
    lines = shell_lines()
    assert len(lines) >= 8
    ran = 0
    for line in lines:
        argv = shlex.split(line)
        sub = argv[1]
        help_ = subprocess.run(
            [sys.executable, "-m", "shardex.cli", sub, "--help"],
            capture_output=True,
            timeout=30,
        )
        assert help_.returncode == 0, f"{line}: `shardex {sub} --help` failed"
        if sub not in RUNNABLE and argv[-1] != "--help" or "orders.jsonl" in argv:
            continue  # (orders.jsonl: the replay example's own test runs it with its heredoc)
        proc = subprocess.run(
            [sys.executable, "-m", "shardex.cli", *argv[1:]],
            capture_output=True,
            timeout=30,
            cwd=workdir,
            env=env_for(cluster),
        )
        assert proc.returncode == 0, f"{line}:\n{proc.stderr.decode()}"
        assert proc.stdout.strip(), line
        ran += 1
    assert ran >= 5


def test_keys_lines_run_as_written(tmp_path):
    """The Identity section's `shardex keys` lines, in order, in a fresh directory."""
    lines = [line for line in shell_lines() if line.startswith("shardex keys ")]
    assert len(lines) >= 4
    env = {k: v for k, v in os.environ.items() if k not in ("SHARDEX_KEY", "SHARDEX_DATA_DIR")}
    for line in lines:
        proc = subprocess.run(
            [sys.executable, "-m", "shardex.cli", *shlex.split(line)[1:]],
            capture_output=True,
            timeout=30,
            cwd=tmp_path,
            env=env,
        )
        assert proc.returncode == 0, f"{line}:\n{proc.stderr.decode()}"
    listing = subprocess.run(
        [sys.executable, "-m", "shardex.cli", "keys", "list"],
        capture_output=True,
        timeout=30,
        cwd=tmp_path,
        env=env,
    ).stdout.decode()
    assert "desk" in listing and "dashboard" in listing and "revoked" in listing


def test_replay_example_prints_what_the_readme_shows(tmp_path):
    i = README.index("cat > orders.jsonl <<'EOF'")
    start = README.rindex("```sh\n", 0, i) + len("```sh\n")
    script = README[start : README.index("```", start)]
    after = start + len(script) + 4  # past the sh block's closing fence
    shown_start = README.index("```\n", after) + 4  # the output block that follows
    shown = README[shown_start : README.index("```", shown_start)].splitlines()
    proc = subprocess.run(
        ["bash", "-e", "-c", script.replace("shardex ", f"{sys.executable} -m shardex.cli ")],
        capture_output=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines() + proc.stderr.decode().splitlines() == shown


def test_markets_example_is_a_valid_markets_file(tmp_path):
    (toml,) = blocks("toml")
    path = tmp_path / "markets.toml"
    path.write_text(toml)
    assert "AAPL-USD" in load_markets(path)


def test_top_level_help():
    proc = subprocess.run(
        [sys.executable, "-m", "shardex.cli", "--help"], capture_output=True, timeout=30
    )
    assert proc.returncode == 0
    for sub in ("up", "status", "book", "replay", "journal", "tail", "loadgen", "bridge"):
        assert f"  {sub} " in proc.stdout.decode(), sub

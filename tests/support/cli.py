"""Running ``shardex`` in tests (as ``python -m shardex.cli``, or the same click commands in
this process), and reading a refusal's text."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from shardex.cli import main
from tests.support.cluster import ROOT


def run_cli(*args: str, timeout: float = 25) -> subprocess.CompletedProcess:
    """Run ``shardex ARGS``; one that keeps running past ``timeout`` was not refused (killed)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardex.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"shardex {' '.join(args)} was not refused (still running): {err[-2000:]!r}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def invoke_cli(
    *args: str, input: bytes | None = None, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess:
    """Run ``shardex ARGS`` in this process (click's runner: the same code from argv to exit
    status and stderr, without the ~0.5 s of CPU a Python start and its imports cost), told as
    a finished process with bytes output; ``input``: its stdin; ``env``: variables set (None:
    unset) for the run. An exception that is not an exit is raised here: what would have been a
    traceback fails the test on its own."""
    res = CliRunner(env=env).invoke(main, list(args), input=input, prog_name="shardex")
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return subprocess.CompletedProcess(
        ["shardex", *args], res.exit_code, res.stdout_bytes, res.stderr_bytes or b""
    )


def refused(proc: subprocess.CompletedProcess, *needles: str) -> str:
    err = proc.stderr.decode()
    assert proc.returncode not in (0, None), err
    assert "Traceback" not in err, err
    assert "refusing to start" in err, err
    for n in needles:
        assert n in err, (n, err)
    return err

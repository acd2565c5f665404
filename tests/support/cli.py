"""Running ``python -m shardex.cli`` in tests, and reading a refusal's text."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

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


def refused(proc: subprocess.CompletedProcess, *needles: str) -> str:
    err = proc.stderr.decode()
    assert proc.returncode not in (0, None), err
    assert "Traceback" not in err, err
    assert "refusing to start" in err, err
    for n in needles:
        assert n in err, (n, err)
    return err

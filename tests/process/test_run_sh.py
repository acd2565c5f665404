"""``tests/run.sh``: its long apt phase shows apt's progress lines instead of hiding them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(0o755)


def test_apt_progress_is_shown(tmp_path: Path) -> None:
    """Regression: ``apt-get install -qq ... >/dev/null`` left minutes of silence. A PATH with
    no redis-server nor prometheus, and fakes for apt-get/sudo/python3, drives the apt phase."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "id"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    _fake(bin_dir, "apt-get", 'echo "apt-get $*"\nif [ "$1" = install ]; then echo "Setting up '
          'prometheus"; fi')  # fmt: skip
    _fake(bin_dir, "sudo", 'exec "$@"')
    _fake(bin_dir, "python3", "exit 0")  # pip install and pytest: not what this test is about
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    res = subprocess.run([str(bin_dir / "bash"), str(ROOT / "tests" / "run.sh")], env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "installing redis-server prometheus" in res.stdout
    assert "Setting up prometheus" in res.stdout  # apt's own progress reaches the terminal
    assert "apt-get update -q\n" in res.stdout

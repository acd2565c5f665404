"""A worktree of a reference commit next to the current tree, for the benches that compare
two trees in the same run (``bench/compare.py``, ``paths.py``, ``lowrate.py``,
``cancelrace.py``): each tree imports its own ``shardex`` in its own processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from scaling import say, tree_env  # noqa: E402


def git(*args: str) -> str:
    out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"git {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout.strip()


class Worktree:
    """A detached worktree of ``ref`` in a temp dir, removed (and pruned) on exit."""

    def __init__(self, ref: str) -> None:
        found = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
            capture_output=True,
            text=True,
        )
        if found.returncode != 0 or not found.stdout.strip():
            raise SystemExit(f"REF {ref!r}: not a commit of {ROOT} (give a hash, tag or branch)")
        self.commit = found.stdout.strip()
        self.short = self.commit[:8]
        self.path = Path(tempfile.mkdtemp(prefix="shardex-compare-")) / "tree"

    def __enter__(self) -> Worktree:
        git("worktree", "add", "--detach", str(self.path), self.commit)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(self.path)],
            capture_output=True,
        )
        shutil.rmtree(self.path.parent, ignore_errors=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], capture_output=True)


def check_imports(tree: Path) -> None:
    """Stop unless a process started the way this bench starts them imports ``tree``'s shardex
    (and not the editable install's /work/main): otherwise both sides would measure one tree."""
    out = subprocess.run(
        [sys.executable, "-c", "import shardex; print(shardex.__file__)"],
        cwd=tree,
        env=tree_env(tree),
        capture_output=True,
        text=True,
    )
    got = Path(out.stdout.strip() or "?").resolve()
    if not got.is_relative_to(tree.resolve()):
        raise SystemExit(f"a process for {tree} imports {got} instead of that tree's shardex")


def current_label() -> str:
    head = git("rev-parse", "--short=8", "HEAD")
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--", "shardex"], capture_output=True
    ).returncode
    return f"current ({head}{' + uncommitted' if dirty else ''})"


@contextmanager
def ref_and_current(ref: str) -> Iterator[dict[str, Path]]:
    """``{"ref": a worktree of ref, "current": this tree}``, each checked to be what its own
    processes import (``check_imports``), said with the load; the worktree removed after."""
    with Worktree(ref) as wt:
        sides = {"ref": wt.path, "current": ROOT}
        for tree in sides.values():
            check_imports(tree)
        say(f"A = {ref} ({wt.short}), B = {current_label()}; load {os.getloadavg()}")
        yield sides

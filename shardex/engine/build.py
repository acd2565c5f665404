"""Compile the engine with mypyc into the cache directory named by its source hash.

    python -m shardex.engine.build [--force]

Needs ``mypy`` (``pip install mypy``) and a C compiler; takes about half a minute. The build is
made in a temporary directory and moved into place whole (a ``COMPLETE`` marker last), so a
failed or concurrent build never leaves a half build that ``shardex.engine`` would load. The
pure-Python engine stays the reference: the compiled one is the same sources, and
``tests/process/test_engine_compiled.py`` checks both give byte-identical events.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import shardex.engine as pkg


def build(force: bool = False, quiet: bool = False) -> Path:
    """Build (unless a matching build exists) and return its directory; RuntimeError on
    failure, with mypyc's output."""
    dest = pkg.cache_dir()
    if (dest / "COMPLETE").is_file() and not force:
        return dest
    try:
        import mypyc  # noqa: F401
    except ImportError:
        raise RuntimeError("mypyc is not installed (pip install mypy)") from None
    src = Path(pkg.__file__).resolve().parent
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=dest.parent))
    try:
        (work / "shardex" / "engine").mkdir(parents=True)
        (work / "shardex" / "__init__.py").write_text("")
        (work / "shardex" / "engine" / "__init__.py").write_text("")
        for name in pkg.SOURCES:
            shutil.copy2(src / name, work / "shardex" / "engine" / name)
        files = [f"shardex/engine/{n}" for n in pkg.SOURCES]
        env = {**os.environ, "MYPYC_OPT_LEVEL": os.environ.get("MYPYC_OPT_LEVEL", "3")}
        proc = subprocess.run(
            [sys.executable, "-m", "mypyc", *files], cwd=work, env=env, capture_output=True,
            text=True,
        )  # fmt: skip
        if proc.returncode:
            raise RuntimeError(f"mypyc failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        shutil.rmtree(work / "build", ignore_errors=True)
        for name in pkg.SOURCES:  # only the extension modules stay: no .py to import by mistake
            (work / "shardex" / "engine" / name).unlink()
        (work / "COMPLETE").write_text(pkg.source_key() + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(work, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not quiet:
        print(f"compiled engine built in {dest}")
    return dest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--force", action="store_true", help="rebuild even if a build exists")
    args = p.parse_args()
    try:
        build(args.force)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None


if __name__ == "__main__":
    main()

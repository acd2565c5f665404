"""Compile the engine (and the account core modules listed in ``shardex.compiled.PACKAGES``)
with mypyc into the cache directory named by their source hash (``shardex.compiled``).

    python -m shardex.engine.build [--force]

``shardex up`` runs this by itself, once, when no build of the current sources exists (see
``ensure``); the command is for building ahead of time, or again after a failure. Needs mypyc
(``mypy``, a dependency) and a C compiler with the Python headers; takes half a minute to a
minute of CPU. The build is made in a temporary directory and moved into place whole (a
``COMPLETE`` marker inside it), so a failed or concurrent build never leaves a half build that
would be loaded, and two concurrent builds leave the first finished one. The interpreted
sources stay the reference: ``tests/process/test_engine_compiled.py`` checks both builds give
byte-identical results.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from shardex import compiled

# what the build type-checks against: the whole package (the account modules import the wire
# layouts and codes); only ``compiled.files()`` are compiled, errors elsewhere are not its own
_MYPY_FLAGS = ("--follow-imports=silent", "--ignore-missing-imports")


def build(force: bool = False, quiet: bool = False) -> Path:
    """Build (unless a matching build exists) and return its directory; RuntimeError on
    failure, with mypyc's output."""
    dest = compiled.cache_dir()
    if compiled.complete() and not force:
        return dest
    try:
        import mypyc  # noqa: F401
    except ImportError:
        raise RuntimeError("mypyc is not installed (pip install mypy)") from None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=dest.parent))
    except OSError as exc:
        raise RuntimeError(f"cannot write the build cache {dest.parent}: {exc}") from None
    try:
        _compile(work)
        _install(work, dest, force)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not quiet:
        print(f"compiled build made in {dest}")
    return dest


def _compile(work: Path) -> None:
    """Copy the package's sources into ``work`` and compile the build's modules there; only
    the extension modules (and the marker) stay."""
    src = Path(compiled.__file__).resolve().parent
    shutil.copytree(src, work / "shardex", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    files = compiled.files()
    env = {**os.environ, "MYPYC_OPT_LEVEL": os.environ.get("MYPYC_OPT_LEVEL", "3")}
    proc = subprocess.run(
        [sys.executable, "-m", "mypyc", *_MYPY_FLAGS, *files], cwd=work, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode:
        raise RuntimeError(f"mypyc failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    keep = {str(Path(f).with_suffix("")) for f in files}
    for path in (work / "shardex").rglob("*"):  # no .py to import by mistake, no other modules
        rel = str(path.relative_to(work))
        if path.is_file() and (path.suffix == ".py" or not rel.startswith(tuple(keep))):
            path.unlink()
    for name in ("build", ".mypy_cache"):
        shutil.rmtree(work / name, ignore_errors=True)
    (work / "COMPLETE").write_text(compiled.source_key() + "\n")


def _install(work: Path, dest: Path, force: bool) -> None:
    """Move the finished build into place in one rename. A concurrent build that got there
    first wins (same sources, same result); ``force`` moves an existing one aside first."""
    if force and dest.exists():
        old = Path(tempfile.mkdtemp(prefix=".old-", dir=dest.parent))
        os.rename(dest, old / "build")
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.rename(work, dest)
    except OSError:
        if not compiled.complete():
            raise


def failed_log() -> Path:
    """Where a failed build of these sources is recorded, so that ``shardex up`` says so once
    per start instead of retrying a minute-long build every time."""
    return compiled.cache_root() / f"{compiled.source_key()}.failed"


def ensure(say: Callable[[str], None]) -> str:
    """What ``shardex up`` does before starting the shards: build when the mode wants the
    build and there is none; ``"compiled"`` or ``"interpreted"`` (what the shards will run).
    A failure is one line through ``say`` and the interpreted engine, never a stopped start;
    ``SHARDEX_ENGINE=compiled`` is the exception (the shards would refuse to start)."""
    mode = compiled.mode()
    if mode == "interpreted" or compiled.complete():
        return "interpreted" if mode == "interpreted" else "compiled"
    failed = failed_log()
    if os.environ.get("SHARDEX_ENGINE_BUILD", "auto") == "off":
        return "interpreted"
    if failed.is_file() and mode == "auto":
        say(f"running the interpreted engine: the compiled build of these sources failed "
            f"before (log: {failed}; retry: python -m shardex.engine.build)")  # fmt: skip
        return "interpreted"
    say(f"compiling the engine with mypyc, once for these sources "
        f"(a minute of CPU; cached in {compiled.cache_root()}; SHARDEX_ENGINE=interpreted "
        "skips it) ...")  # fmt: skip
    try:
        build(quiet=True)
    except (RuntimeError, OSError) as exc:
        text = str(exc)
        try:
            failed.parent.mkdir(parents=True, exist_ok=True)
            failed.write_text(text + "\n")
        except OSError:
            failed = Path("(not written: the cache is not writable)")
        say(f"running the interpreted engine: the compiled build failed "
            f"({text.splitlines()[0]}; log: {failed})")  # fmt: skip
        if mode == "compiled":
            raise SystemExit(f"SHARDEX_ENGINE=compiled and the build failed: {text}") from None
        return "interpreted"
    say(f"compiled build ready in {compiled.cache_dir()}")
    return "compiled"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--force", action="store_true", help="rebuild even if a build exists")
    args = p.parse_args()
    try:
        build(args.force)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    failed_log().unlink(missing_ok=True)


if __name__ == "__main__":
    main()

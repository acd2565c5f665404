"""What ``shardex up`` does about the compiled cores before starting shards (``ensure``): build
once when there is no build of these sources, say so in one line, fall back to the interpreted
ones on a failure (one line, a record so the next start does not retry), and do nothing when
told not to. The real mypyc build is ``tests/process/test_engine_compiled.py``'s; here the build
is a stand-in (no subprocess), under ~0.1 s of CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardex import compiled
from shardex.engine import build as engine_build


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHARDEX_ENGINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SHARDEX_ENGINE", raising=False)
    monkeypatch.delenv("SHARDEX_ENGINE_BUILD", raising=False)
    return tmp_path / "cache"


def _fake_build(calls: list[str], fail: str | None = None):
    def build(force: bool = False, quiet: bool = False) -> Path:
        calls.append("build")
        if fail:
            raise RuntimeError(fail)
        top = compiled.cache_dir()
        for rel in compiled.files():
            so = (top / rel).with_name(Path(rel).stem + compiled.EXTENSION_SUFFIXES[0])
            so.parent.mkdir(parents=True, exist_ok=True)
            so.write_bytes(b"")
        (top / "COMPLETE").write_text(compiled.source_key())
        return top

    return build


def test_up_builds_once_when_there_is_no_build(cache, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(engine_build, "build", _fake_build(calls))
    said: list[str] = []
    assert engine_build.ensure(said.append) == "compiled"
    assert calls == ["build"]
    assert len(said) == 2 and said[0].startswith("compiling the engine with mypyc")
    assert compiled.complete()
    said.clear()
    assert engine_build.ensure(said.append) == "compiled"  # cached: no build, nothing said
    assert calls == ["build"] and said == []


def test_a_failed_build_is_one_line_and_not_retried(cache, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(engine_build, "build", _fake_build(calls, "mypyc failed:\nno gcc"))
    said: list[str] = []
    assert engine_build.ensure(said.append) == "interpreted"
    assert said[-1].startswith("running the interpreted engine: the compiled build failed")
    assert "mypyc failed" in said[-1] and "no gcc" not in said[-1]  # one line
    assert "no gcc" in engine_build.failed_log().read_text()  # the whole log is kept
    said.clear()
    assert engine_build.ensure(said.append) == "interpreted"
    assert calls == ["build"]  # not tried again for these sources
    assert len(said) == 1 and "failed before" in said[0]


def test_a_cache_that_cannot_be_written_falls_back(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("SHARDEX_ENGINE_CACHE", str(blocker / "cache"))
    monkeypatch.delenv("SHARDEX_ENGINE", raising=False)
    monkeypatch.delenv("SHARDEX_ENGINE_BUILD", raising=False)
    said: list[str] = []
    assert engine_build.ensure(said.append) == "interpreted"
    assert said[-1].startswith("running the interpreted engine: the compiled build failed")


@pytest.mark.parametrize(("env", "value"), [("SHARDEX_ENGINE", "interpreted"),
                                            ("SHARDEX_ENGINE_BUILD", "off")])  # fmt: skip
def test_no_build_when_told_not_to(cache, monkeypatch, env, value):
    calls: list[str] = []
    monkeypatch.setattr(engine_build, "build", _fake_build(calls))
    monkeypatch.setenv(env, value)
    said: list[str] = []
    assert engine_build.ensure(said.append) == "interpreted"
    assert calls == [] and said == []


def test_a_mode_typo_is_refused(monkeypatch):
    monkeypatch.setenv("SHARDEX_ENGINE", "compild")
    with pytest.raises(ImportError, match="auto, interpreted or compiled"):
        compiled.mode()


def test_the_tests_run_the_interpreted_engine_whatever_the_users_cache_holds() -> None:
    """conftest points every test process at an empty engine cache of its own: with the
    developer's (where ``shardex up`` left a build of these very sources) 66 tests that
    subclass or patch engine classes failed on mypyc's native classes."""
    import shardex.engine as engine_pkg

    assert engine_pkg.implementation() == "interpreted"
    assert Path(compiled.cache_root()).name.startswith("shardex-test-engine-cache-")

"""Fixtures that run real shardex processes on loopback, on free ports, and always clean up.

Clusters run secure (``shardex up``'s default: CURVE keys in DATA_DIR/keys) unless a test asks
for ``insecure=True`` (tests that speak raw ZeroMQ to the ports). Clients get the cluster's admin
key explicitly: ``SHARDEX_KEY=none`` below keeps a developer's ./data/keys/admin.key (or their
own $SHARDEX_KEY) from leaking into tests that connect without naming a key.

Tests that need what a box may lack (root to mount a tmpfs or make network namespaces, a C
compiler, openssl, prometheus, ...) call ``require(condition, reason)``: without it they are
skipped with the reason. ``SHARDEX_TESTS_STRICT=1`` makes such a skip, and any other (a
``skipif`` mark, ``pytest.skip``), a failure instead, for whoever wants to be sure that nothing
was skipped (``SHARDEX_TESTS_STRICT=1 python -m pytest``). ``.ci/run`` does not set it (CI runs
as root with everything installed; a skip there is still reported by pytest's summary).
docs/testing.md describes the modes.
"""

# ruff: noqa: E402  (the engine cache is set before the imports below can load shardex.engine)
from __future__ import annotations

import atexit
import os
import random
import shutil
import tempfile
from collections.abc import Iterator

# The compiled cores: tests run the interpreted ones (the reference) unless a test builds its
# own (tests/process/test_engine_compiled.py points SHARDEX_ENGINE_CACHE at its build). A
# developer's cache holds the build ``shardex up`` made for these very sources, and tests that
# subclass or patch engine classes fail on mypyc's native classes: so every test process, and
# every cluster it starts, reads an empty cache of its own -- set before anything imports
# ``shardex.engine``, which loads a build at import. ``shardex up`` builds nothing in tests
# either (a minute of CPU per source version).
_ENGINE_CACHE = tempfile.mkdtemp(prefix="shardex-test-engine-cache-")
atexit.register(shutil.rmtree, _ENGINE_CACHE, True)
os.environ["SHARDEX_ENGINE_CACHE"] = _ENGINE_CACHE
os.environ.setdefault("SHARDEX_ENGINE_BUILD", "off")

import pytest
from hypothesis import settings as hypothesis_settings

# The helpers live in tests/support (test files import them from there); the names stay
# importable from conftest too, for code written against them here.
from tests.support.cluster import (  # noqa: F401 - re-exported
    LOG_DIR,
    ROOT,
    TEST_LOGS,
    Cluster,
    ClusterExited,
    wait_for_cluster,
)
from tests.support.ports import free_layout, listening, wait_listening  # noqa: F401
from tests.support.redis import RedisServer, redis_server_binary  # noqa: F401
from tests.support.schedule import file_order
from tests.support.scramble import rewrite_error_texts
from tests.support.shared_gateway import FIXTURE as SHARED_GATEWAY
from tests.support.shared_gateway import SharedGateway, release, shared

os.environ["SHARDEX_KEY"] = "none"  # no implicit key in tests (children inherit it too)

# ---- honest tests: hypothesis profile and strict mode (begin) --------------------------------
# Kept in one block, apart from the port and worker code, so that edits to either merge cleanly.
# docs/testing.md describes both modes.
#
# Property tests in CI (the ``CI`` variable set, as .ci/run has it) load the ``ci`` profile: new
# random examples on every run (derandomize off: a fixed seed would only ever try the same
# ones), the blob for ``@reproduce_failure`` printed with a failure, no per-example deadline (the
# box is shared: a slow example is not a wrong one). The run's seed is chosen here and printed in
# the report header, so a red run found by chance is replayed with ``--hypothesis-seed=N``.
hypothesis_settings.register_profile("ci", print_blob=True, derandomize=False, deadline=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


@pytest.hookimpl(tryfirst=True)  # before hypothesis's own pytest_configure reads the option
def pytest_configure(config: pytest.Config) -> None:
    """In CI, give the run a seed when none was asked for (pytest-xdist workers get the
    controller's options, so every worker uses the same one)."""
    if os.environ.get("CI") and config.getoption("hypothesis_seed", None) is None:
        config.option.hypothesis_seed = str(random.SystemRandom().randrange(2**32))


def pytest_report_header(config: pytest.Config) -> str | None:
    seed = config.getoption("hypothesis_seed", None)
    if seed is None:
        return None
    return f"hypothesis seed: {seed} (replay a failure with --hypothesis-seed={seed})"


STRICT_ENV = "SHARDEX_TESTS_STRICT"


def require(condition: object, reason: str) -> None:
    """Go on with the calling test only if ``condition`` holds (a capability of this box);
    else skip it with ``reason``, or fail it when ``SHARDEX_TESTS_STRICT=1`` (read per call:
    a silent skip must not pass for a green run when the caller asked for every test)."""
    if condition:
        return
    if os.environ.get(STRICT_ENV, "") == "1":
        pytest.fail(f"{reason} ({STRICT_ENV}=1: a test that cannot run here fails)", pytrace=False)
    pytest.skip(reason)


class StrictSkips:
    """With ``SHARDEX_TESTS_STRICT=1``, every skip is reported as a failure, whatever made it:
    ``require``, a ``skipif`` mark, ``pytest.skip`` or ``importorskip`` (an expected failure,
    ``xfail``, stays what it is). So a run that asked for every test cannot pass with one
    silently not run: a root-only test on a box without root, a missing tool."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):  # noqa: ARG002 - pytest hook signature
        outcome = yield
        report = outcome.get_result()
        if report.skipped and not hasattr(report, "wasxfail"):
            _fail_skip(report)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_make_collect_report(self, collector):  # noqa: ARG002 - pytest hook signature
        outcome = yield  # (a whole module skipped at import: importorskip, allow_module_level)
        report = outcome.get_result()
        if report.skipped:
            _fail_skip(report)


def _fail_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Make a skipped report a failed one that still says why it was skipped."""
    why = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
    why = str(why).removeprefix("Skipped: ")
    report.outcome = "failed"
    report.longrepr = f"skipped, and {STRICT_ENV}=1 asks that nothing be: {why}"


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get(STRICT_ENV, "") == "1":
        session.config.pluginmanager.register(StrictSkips(), "shardex-strict-skips")


# ---- honest tests (end) ----------------------------------------------------------------------

# Logs of the clusters started during the running test: deleted when it passes, kept (and named
# in the report) when it fails, so a passing suite leaves nothing behind in the temp dir.
_TEST_LOGS = TEST_LOGS


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # noqa: ARG001 - pytest hook signature
    outcome = yield
    if outcome.get_result().failed:
        item.shardex_failed = True


@pytest.fixture(scope="session", autouse=True)
def _session_cluster_logs(request) -> Iterator[None]:
    """Logs of clusters that outlive one test (module fixtures): kept only if anything failed."""
    yield
    if not request.session.testsfailed:
        for path in _TEST_LOGS:
            path.unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def _cluster_logs(request) -> Iterator[None]:
    first = len(_TEST_LOGS)
    yield
    logs = _TEST_LOGS[first:]
    del _TEST_LOGS[first:]
    if getattr(request.node, "shardex_failed", False):
        if logs:
            request.node.add_report_section(
                "teardown", "shardex logs", "kept: " + " ".join(map(str, logs))
            )
        return
    for path in logs:
        path.unlink(missing_ok=True)


# tests/<tier>/: docs/testing.md says what goes where
TIERS = ("unit", "process", "chaos", "browser", "bench")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test marked with its tier (its directory: ``-m "not chaos"``), and the files put in
    the order that spreads the long ones over the xdist workers (tests/support/schedule.py);
    a file's tests stay together and in order (its module fixtures start once)."""
    counts: dict[str, int] = {}
    for item in items:
        if item.path.parent.name in TIERS:
            item.add_marker(item.path.parent.name)
        counts[item.path.name] = counts.get(item.path.name, 0) + 1
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    rank = {name: k for k, name in enumerate(file_order(list(counts.items()), workers))}
    items.sort(key=lambda item: rank[item.path.name])  # (a stable sort)


@pytest.fixture
def scramble(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every error text made during the test rewritten to nonsense (tests/support/scramble.py);
    the original texts, in order."""
    return rewrite_error_texts(monkeypatch)


@pytest.fixture
def gateway_cluster() -> SharedGateway:
    """The cluster + gateway the gateway's private-API modules share (tests/support/
    shared_gateway.py): started on first use, stopped when the next test needs it no more.
    A module using it keeps to its own accounts and tidies them on its way out."""
    return shared()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After a test's (and its module's) fixtures are torn down: stop the shared gateway
    cluster unless the next test asks for it too (idle, it would spend CPU to the end)."""
    yield
    if SHARED_GATEWAY in getattr(item, "fixturenames", ()) and (
        nextitem is None or SHARED_GATEWAY not in getattr(nextitem, "fixturenames", ())
    ):
        release()


@pytest.fixture
def cluster2() -> Iterator[Cluster]:
    c = Cluster(2)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def cluster1() -> Iterator[Cluster]:
    c = Cluster(1)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    d = tmp_path / "redis"
    d.mkdir()
    server = RedisServer(str(d))
    try:
        yield server
    finally:
        server.stop()

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

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from shardex.client import Client, ShardexError
from shardex.layout import Layout
from shardex.node.supervisor import port_free

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = Path(tempfile.gettempdir())
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
_TEST_LOGS: list[Path] = []


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


def _base_range(span: int = 1800) -> tuple[int, int]:
    """Base ports whose whole layout (replica ports included: base+1100..base+1700) lies below
    the kernel's ephemeral range: a port there that is free when checked can still be taken by
    an outgoing connection before the cluster binds it (seen on a busy box)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            low = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    if low - span > 12000:
        return 10000, low - span
    return 20000, 60000 - span  # an unusual ephemeral range: the old choice


def free_layout(shards: int, routers: int = 1, accounts: int = 0) -> Layout:
    """A layout whose every port is free right now (random base, retried), the account
    tier's and the ``--replicas 2`` ports included."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    lo, hi = _base_range()
    for _ in range(200):
        base = rng.randrange(lo, hi)
        layout = Layout("127.0.0.1", base, shards, routers, accounts=accounts)
        if all(port_free("127.0.0.1", p) for p in (*layout.ports(), *layout.replica_ports())):
            return layout
    raise RuntimeError("no free port range found")


def listening(port: int) -> bool:
    """True when something LISTENs on 127.0.0.1/0.0.0.0:``port`` (read from /proc, so asking
    never connects: connecting to a port nobody listens on yet can self-connect and take it)."""
    want = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                next(fh)
                for line in fh:
                    f = line.split()
                    if f[1].endswith(want) and f[3] == "0A":  # 0A: LISTEN
                        return True
        except OSError:
            continue
    return False


def wait_listening(ports: list[int], timeout: float = 20.0, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while not all(listening(p) for p in ports):
        if proc is not None and proc.poll() is not None:
            return  # it died: the caller reports why
        if time.monotonic() > deadline:
            raise TimeoutError(f"ports {ports} not listening within {timeout}s")
        time.sleep(0.05)


def _accounts_linked(c: Client, info: dict) -> bool:
    """Every account shard has heard from every engine shard on its link (a forward sent
    before that waits in ZeroMQ, and a cancel on the short path could overtake it)."""
    if not info.get("accounts"):
        return True
    # each against the engine count it was started with (a test may misconfigure the tiers)
    want = {t.get("shard"): list(range(t.get("engines", 0))) for t in info["account_topology"]}
    return all(
        list(st.get("engines_linked", ())) == want.get(st.get("account_shard"))
        for st in c.account_status()
    )


class ClusterExited(RuntimeError):
    """``shardex up`` ended while the test waited for it (the message: its output's tail)."""


def wait_for_cluster(
    layout: Layout, timeout: float = 20.0, key: Path | None = None, proc=None, log=None
) -> dict:
    """The topology once every shard registered; ``key``: the admin key file to ask with (it
    appears once ``shardex up`` created the cluster's keys), None for an insecure cluster.
    ``proc``/``log``: the ``shardex up`` process and its output file, so that a cluster that
    refused to start (say, ports taken meanwhile by another process) is reported at once."""
    deadline = time.monotonic() + timeout
    last: object = None

    def exited() -> None:
        if proc is not None and proc.poll() is not None:
            tail = Path(log).read_text(errors="replace")[-2000:] if log else ""
            raise ClusterExited(f"shardex up exited with {proc.returncode}: {tail}")

    while key is not None and not key.exists():
        exited()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no admin key {key} within {timeout}s")
        time.sleep(0.05)
    with Client(layout.frontend, timeout=0.5, key=key or False) as c:
        while time.monotonic() < deadline:
            exited()
            try:
                info = c.topology()
                if all(t.get("pid") for t in info["topology"]) and _accounts_linked(c, info):
                    return info
                last = info
            except ShardexError as exc:
                last = exc
            time.sleep(0.1)
    raise TimeoutError(f"cluster at {layout.frontend} not ready: {last}")


class Cluster:
    """A ``shardex up`` child in its own process group."""

    def __init__(
        self,
        shards: int,
        *extra: str,
        data_dir: str | None = None,
        redis: str | None = None,
        insecure: bool = False,
        routers: int = 1,
        accounts: int = 0,
    ) -> None:
        """``redis``: None (no bridge), "embedded" (``shardex up``'s own), or a URL.
        ``insecure``: ``shardex up --insecure`` (no keys) for tests that speak raw ZeroMQ."""
        if insecure:
            extra = ("--insecure", *extra)
        if redis is None:
            extra = ("--no-bridge", *extra)
        elif redis != "embedded":
            extra = ("--redis-url", redis, *extra)
        if routers != 1:
            extra = ("--routers", str(routers), *extra)
        # explicit either way: ``shardex up``'s default is one account shard, and most tests
        # exercise the engine path without funds
        extra = ("--accounts", str(accounts), *extra)
        self.own_data = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="shardex-data-")
        self.keys_dir: Path | None = None if insecure else Path(self.data_dir) / "keys"
        # the admin key ``shardex up`` creates on first start (None: insecure cluster)
        self.key: Path | None = None if insecure else self.keys_dir / "admin.key"
        for attempt in range(3):  # free ports can be taken between the check and the bind
            self.layout = free_layout(shards, routers, accounts)
            self.log_path = LOG_DIR / f"shardex-test-{self.layout.base_port}.log"
            self.log = open(self.log_path, "w+b")  # noqa: SIM115 - closed in stop()
            _TEST_LOGS.append(self.log_path)
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "shardex.cli",
                    "up",
                    "--shards",
                    str(shards),
                    "--base-port",
                    str(self.layout.base_port),
                    "--no-pin",
                    "--data-dir",
                    self.data_dir,
                    *extra,
                ],
                stdout=self.log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=ROOT,
            )
            try:
                self.info = wait_for_cluster(
                    self.layout, key=self.key, proc=self.proc, log=self.log_path
                )
                return
            except ClusterExited as exc:
                self.stop()
                if "ports already in use" not in str(exc) or attempt == 2:
                    raise
            except Exception:
                self.stop()
                raise

    @property
    def endpoint(self) -> str:
        return self.layout.frontend

    def client(self, **kw) -> Client:
        kw.setdefault("timeout", 5.0)
        kw.setdefault("key", self.key or False)
        return Client(self.endpoint, **kw)

    def key_args(self) -> list[str]:
        """``--key FILE`` (or ``--key none``) for CLI commands that talk to this cluster."""
        return ["--key", str(self.key) if self.key else "none"]

    def child_pid(self, name: str) -> int:
        """Pid of the newest child ``name`` (e.g. "bridge") from the supervisor's log."""
        import re

        pids = re.findall(rf"started {re.escape(name)} \(pid (\d+)\)", self.output())
        if not pids:
            raise LookupError(f"no {name} started")
        return int(pids[-1])

    def shard_pid(self, i: int) -> int:
        with self.client() as c:
            return c.topology()["topology"][i]["pid"]

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything left in the group
        except ProcessLookupError:
            pass
        self.proc.wait(5)
        self.log.close()
        if self.own_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)


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


def redis_server_binary() -> str:
    """Debian's real redis-server when installed (CI installs it), else the embedded one."""
    import shutil as _shutil

    from shardex.node.supervisor import redis_binary

    return _shutil.which("redis-server") or redis_binary()


class RedisServer:
    """A real Redis server on a free loopback port, AOF on, in its own directory."""

    def __init__(self, directory: str, extra_args: tuple[str, ...] = ()) -> None:
        self.dir = directory
        self.extra_args = extra_args  # more server options (e.g. --enable-debug-command local)
        self.port = free_layout(1).base_port
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.dir,
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        r = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if r.ping():
                    return
            except redis.exceptions.RedisError:
                time.sleep(0.05)
        raise TimeoutError("redis did not start")

    def client(self):
        import redis

        return redis.Redis(port=self.port, decode_responses=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    d = tmp_path / "redis"
    d.mkdir()
    server = RedisServer(str(d))
    try:
        yield server
    finally:
        server.stop()

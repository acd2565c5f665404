"""``shardex up`` as a test's cluster: real processes on loopback, on free ports, always cleaned up.

Clusters run secure (``shardex up``'s default: CURVE keys in DATA_DIR/keys) unless a test asks
for ``insecure=True`` (tests that speak raw ZeroMQ to the ports). Logs of the clusters a test
started are listed in ``TEST_LOGS``: conftest deletes them when the test passes and names them
in the report when it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from shardex.client import Client, ShardexError
from shardex.kinds import OPTIONAL
from shardex.layout import Layout
from tests.support.ports import free_layout

ROOT = Path(__file__).resolve().parent.parent.parent
LOG_DIR = Path(tempfile.gettempdir())
# Logs of the clusters started during the running test (see conftest's ``_cluster_logs``).
TEST_LOGS: list[Path] = []


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


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rpartition(")")[2].split()[:1] != ["Z"]


def resting_by_shard(client: Client) -> dict[str, dict[int, int]]:
    """Each pair's resting order count on each engine shard holding any (one key: one owner),
    from every shard's status."""
    out: dict[str, dict[int, int]] = {}
    for st in client.status():
        for symbol, count in st.get("symbols", {}).items():
            if count:
                out.setdefault(symbol, {})[st["shard"]] = count
    return out


class ClusterExited(RuntimeError):
    """``shardex up`` ended while the test waited for it (the message: its output's tail)."""


def wait_for_cluster(
    layout: Layout, timeout: float = 60.0, key: Path | None = None, proc=None, log=None
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
        gateways: int = 0,
        without: tuple[str, ...] = OPTIONAL,
    ) -> None:
        """``redis``: None (no bridge), "embedded" (``shardex up``'s own), or a URL.
        ``insecure``: ``shardex up --insecure`` (no keys) for tests that speak raw ZeroMQ.
        ``gateways``: 0 unless the test serves market data (a gateway per cluster would
        cost every test its start). ``without``: the optional stream consumers left out
        (``shardex up --without``): by default both, about 2 s of CPU per cluster; a test of
        candles, history or of ``shardex up``'s whole default passes ``without=()``."""
        extra = ("--gateways", str(gateways), *(w for name in without for w in ("--without", name)),
                 *extra)  # fmt: skip
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
            # (as started: a layout's own default is one gateway)
            self.layout = replace(self.pick_layout(shards, routers, accounts), gateways=gateways)
            self.log_path = LOG_DIR / f"shardex-test-{self.layout.base_port}.log"
            self.log = open(self.log_path, "w+b")  # noqa: SIM115 - closed in stop()
            TEST_LOGS.append(self.log_path)
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

    def pick_layout(self, shards: int, routers: int, accounts: int) -> Layout:
        """The ports to start on (a subclass may want more of them free)."""
        return free_layout(shards, routers, accounts)

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

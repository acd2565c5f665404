"""One real cluster with its account tier, embedded Redis and one gateway, shared by the
gateway's private-API process modules (``test_gateway_rest``, ``test_gateway_user``,
``test_binance``): each of them used to start the same cluster for itself (~4 s of CPU each).

Isolation: each module trades under its own account names and, when it leaves, cancels every
order its accounts still have (``SharedGateway.tidy``), so the next module meets the books as
it would in a cluster of its own (``test_binance`` checks the whole depth of BTC-USD). A test
that restarts the gateway counts restarts from its own start (``gateway_starts``).

The cluster starts on first use in a pytest process and stops once the next test to run
needs it no more (conftest's ``pytest_runtest_teardown``): an idle cluster left running to
the end of the session would burn a core's worth of seconds on its timers. A later test that
needs it again (a file stolen by another xdist worker) starts it again.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable

from tests.support.cluster import Cluster
from tests.support.wait import wait_until

FIXTURE = "gateway_cluster"  # the conftest fixture's name: the tests that need the cluster


def healthy(url: str) -> bool:
    """The gateway answers ``/healthz`` with 200."""
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


class SharedGateway:
    """The shared cluster and its gateway's URL (the gateway up when handed out)."""

    def __init__(self) -> None:
        self.cluster = Cluster(1, redis="embedded", accounts=1, gateways=1)
        self.url = f"http://127.0.0.1:{self.cluster.layout.gateway_port(0)}"

    def ready(self) -> SharedGateway:
        """Self, once the gateway answers (it may be restarting after a test killed it)."""
        wait_until(lambda: healthy(self.url), 60, "the shared gateway is up")
        return self

    def gateway_starts(self) -> int:
        """How many times ``shardex up`` has started the gateway so far."""
        return self.cluster.output().count("started gateway")

    def tidy(self, accounts: Iterable[str]) -> None:
        """Cancel every order ``accounts`` still have, in every pair (a module's way out)."""
        with self.cluster.client(timeout=10) as admin:
            for account in accounts:
                admin.cancel_all(account=account)

    def stop(self) -> None:
        self.cluster.stop()


_shared: SharedGateway | None = None


def shared() -> SharedGateway:
    """The running shared cluster, started now if it is not."""
    global _shared
    if _shared is None:
        _shared = SharedGateway()
    return _shared.ready()


def tidy(accounts: Iterable[str]) -> None:
    """``SharedGateway.tidy`` on the running shared cluster (none running: nothing to do)."""
    if _shared is not None:
        _shared.tidy(accounts)


def release() -> None:
    """Stop the shared cluster if it runs (started again by the next ``shared()``)."""
    global _shared
    if _shared is not None:
        held, _shared = _shared, None
        held.stop()

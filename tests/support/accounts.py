"""The account tier in tests: a cluster with account shards, its balances streams in Redis,
a funded flow of orders, and a poll that tolerates a shard restarting (``_wait``).
"""

from __future__ import annotations

import threading
import time
import urllib.request

import zmq

from shardex.accounts.assets import AssetTable
from shardex.accounts.codes import AE_BALANCE, AE_FEES, AE_FILL, AE_RESTRICTED
from shardex.auth import KeyFile, client_socket
from shardex.config import load_markets
from shardex.timemarks import check_runs, ts_at
from shardex.wire.protocol import (
    OP_EVENTS,
    OP_STATUS,
    decode_reply,
    encode_request,
)
from tests.support.cluster import Cluster


def _wait(pred, what: str, timeout: float = 15.0):
    """Poll until ``pred()`` is truthy (settlements are asynchronous by design)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except Exception as exc:  # a shard restarting: ask again
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


ASSETS = AssetTable(load_markets(None))


def accounts_cluster(shards: int, accounts: int, *extra: str, **kw) -> Cluster:
    """A cluster with the account tier on (every port of it checked free by ``Cluster``)."""
    return Cluster(shards, *extra, accounts=accounts, **kw)


def _ask(cluster: Cluster, j: int, cmd: tuple, direct: str | None = None) -> dict:
    """One request to account shard j's direct port (``direct``: a replicated one's leader's),
    with the cluster's admin key."""
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    client_socket(s, KeyFile.read(cluster.key))
    s.connect(direct or cluster.layout.account_direct(j))
    try:
        s.send_multipart([b"test", b"r1", encode_request([cmd])])
        assert s.poll(5000), f"account shard {j} did not answer {cmd!r}"
        req, payload = s.recv_multipart()
        error, results = decode_reply(payload)
        assert error is None, error
        return results[0]
    finally:
        s.close(0)


def _expected(cluster: Cluster, j: int, direct: str | None = None
              ) -> list[tuple[str, dict[str, str]]]:  # fmt: skip
    """Account shard j's balance, fee, fill and restriction events, as the stream entries they
    must become."""
    seq = _ask(cluster, j, (OP_STATUS,), direct)["seq"]
    out: list[tuple[str, dict[str, str]]] = []
    first = 1
    while first <= seq:
        res = _ask(cluster, j, (OP_EVENTS, first, seq), direct)
        assert "error" not in res, res
        evs = res["events"]
        assert evs and evs[0][1] == first
        for ev in evs:
            fmt = ASSETS.fmt
            if ev[0] == AE_BALANCE:
                _, s, account, asset, avail, held, why, ref = ev
                f = {"ev": "balance", "account": account, "asset": asset,
                     "available": fmt(asset, avail), "held": fmt(asset, held),
                     "why": why, "ref": ref}  # fmt: skip
            elif ev[0] == AE_FEES:
                _, s, asset, total = ev
                f = {"ev": "fees", "asset": asset, "total": fmt(asset, total)}
            elif ev[0] == AE_FILL:
                _, s, account, symbol, oid, ref, role, bps, fee, asset = ev
                f = {"ev": "fill", "account": account, "symbol": symbol, "id": oid, "ref": ref,
                     "role": role, "fee_bps": str(bps), "fee": fmt(asset, fee),
                     "fee_asset": asset}  # fmt: skip
            elif ev[0] == AE_RESTRICTED:
                _, s, account, restricted = ev
                f = {"ev": "restricted", "account": account,
                     "restricted": "true" if restricted else "false"}  # fmt: skip
            else:
                continue
            ts = ts_at(check_runs(res.get("ts")) or [], s)  # (the re-send's time marks)
            out.append((f"{s}-0", {**f, "seq": str(s), "ts": str(ts), "shard": str(j)}))
        first = evs[-1][1] + 1
    return out


def _stream(r, j: int) -> list[tuple[str, dict[str, str]]]:
    return [(eid, dict(f)) for eid, f in r.xrange(f"shardex:balances:{j}")]


def _converged(cluster: Cluster, r, shards: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        diff = []
        for j in range(shards):
            want, got = _expected(cluster, j), _stream(r, j)
            if want != got:
                diff.append((j, len(want), len(got)))
        if not diff:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"balances streams differ (shard, want, got): {diff}")
        time.sleep(0.2)


def _flow(c, tag: str, n: int, halfway: threading.Event | None = None) -> None:
    """Deposits, resting orders, trades (price improvement, fees) and cancels."""
    for k in range(n):
        if halfway is not None and k == n // 2:
            halfway.set()
            time.sleep(0.3)  # the bridge dies here; orders go on
        a, b = f"buyer-{tag}-{k % 3}", f"seller-{tag}-{k % 3}"
        assert c.deposit(a, "USD", "1000", ref=f"{tag}-d{k}a").ok
        assert c.deposit(b, "BTC", "1", ref=f"{tag}-d{k}b").ok
        assert c.place("BTC-USD", "sell", "0.01", "100", account=b, id=f"{tag}-s{k}").ok
        assert c.place("BTC-USD", "buy", "0.01", "101", account=a, id=f"{tag}-b{k}").ok
        assert c.place("BTC-USD", "buy", "0.01", "50", account=a, id=f"{tag}-r{k}").ok
        c.cancel("BTC-USD", f"{tag}-r{k}", account=a)


def _metric(port: int, name: str, what: str, label: str = "what") -> float:
    """One sample of a process's /metrics (``name{...<label>="<what>"}``)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{") and f'{label}="{what}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise LookupError(f"{name} {what} not in /metrics")

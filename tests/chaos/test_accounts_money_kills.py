"""The account tier's money across kills (real processes): settlements, forwards and balance
events older than the in-memory rings come back from the journals after an account shard, the
bridge or an engine shard was down or killed; and ``shardex audit`` on a live cluster exits 1,
naming the asset, when a shard's state was forged while it was down (kill -9 of it first)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from decimal import Decimal as D

import pytest

from shardex.accounts.core import account_shard_for
from shardex.accounts.machines import AccountMachineFactory
from shardex.wire.protocol import shard_for
from tests.support.accounts import _wait


def _metric(port: int, name: str, what: str | None = None) -> float:
    """One sample of a Prometheus exporter (the first whose labels contain ``what``)."""
    import urllib.request

    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name) and (what is None or f'what="{what}"' in line):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {what or ''} at :{port}")


def _dead(pid: int) -> bool:
    """A killed child of a stopped supervisor is a zombie until reaped: dead all the same."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.timeout(120)
def test_resends_older_than_the_rings_come_from_the_journal(redis_server, monkeypatch):
    """Rings of 4 settlements per link and 8 account events (``SHARDEX_LINK_RING``,
    ``SHARDEX_EVENT_RING``). (a) Account shard 1 is down (its supervisor paused, so it stays
    down) while 30 fills of its maker's order happen: on restart the engine shard re-sends the
    settlements from its journal; the maker is paid exactly, the audit is clean. (b) The
    bridge is down while account shard 1 emits more events than its ring holds: on restart the
    bridge gets the range from the account shard's journal. (c) Engine shard 0 loses 10 forwards
    (frozen, then killed): on restart they come from the account shard's journal and all rest
    on the book. Both balance streams then equal exactly what the account shards
    emitted, in order, each event once; the audit is clean."""
    from shardex.client import audit_report
    from tests.support.accounts import _converged, _stream
    from tests.support.cluster import Cluster

    monkeypatch.setenv("SHARDEX_LINK_RING", "4")
    monkeypatch.setenv("SHARDEX_EVENT_RING", "8")
    cl = Cluster(1, accounts=2, redis=redis_server.url)
    sup = cl.proc.pid
    try:
        r = redis_server.client()
        maker = next(a for a in (f"maker{k}" for k in range(50)) if account_shard_for(a, 2) == 1)
        taker = next(a for a in (f"taker{k}" for k in range(50)) if account_shard_for(a, 2) == 0)
        with cl.client() as c:
            assert c.deposit(maker, "BTC", "10", ref="m-btc").ok
            assert c.deposit(taker, "USD", "100000", ref="t-usd").ok
            assert c.place("BTC-USD", "sell", "1", "100", account=maker, id="m-1").ok
            _wait(lambda: c.order_status("BTC-USD", "m-1", account=maker)["state"] == "live",
                  "the maker's order on the book")  # fmt: skip
            _converged(cl, r, 2)

            # (a) account shard 1 down while its order fills 30 times
            victim = cl.child_pid("accounts.1")
            os.kill(sup, signal.SIGSTOP)
            try:
                os.kill(victim, signal.SIGKILL)
                _wait(lambda: _dead(victim), "account shard 1 dead")
                for k in range(30):
                    res = c.place("BTC-USD", "buy", "0.01", "100", account=taker, id=f"t-{k}",
                                  tif="ioc")  # fmt: skip
                    assert res.ok, res
            finally:
                os.kill(sup, signal.SIGCONT)
            # 0.3 BTC sold at 100, maker fee 2 bps: 30 - 0.006 USD
            want = {"BTC": (D(9), D("0.7")), "USD": (D("29.994"), D(0))}
            _wait(lambda: c.balance(maker) == want, "the maker paid for all 30 fills", 30)
            assert _metric(cl.layout.shard_metrics_port(0), "shardex_shard_account_link",
                           "journal") > 0  # fmt: skip

            # (b) the bridge down while account shard 1 emits 20 events (ring: 8)
            bridge = cl.child_pid("bridge")
            os.kill(sup, signal.SIGSTOP)
            try:
                os.kill(bridge, signal.SIGKILL)
                _wait(lambda: _dead(bridge), "bridge dead")
                for k in range(20):
                    assert c.deposit(maker, "USD", "1", ref=f"m-usd-{k}").ok
            finally:
                os.kill(sup, signal.SIGCONT)
            _converged(cl, r, 2, timeout=30.0)
            assert _metric(cl.layout.account_metrics_port(1),
                           "shardex_accounts_journal_resent") > 0  # fmt: skip
            for j in range(2):
                ids = [int(eid.split("-")[0]) for eid, _ in _stream(r, j)]
                assert ids == sorted(set(ids))

            # (c) 10 forwards lost with engine shard 0: sent into its socket while it is
            # frozen, then it is killed (ZeroMQ would have queued them while it was merely
            # down); its HAVE after the restart asks for more than the ring (4) holds
            engine = cl.shard_pid(0)
            port = cl.layout.account_metrics_port(0)  # the taker's account shard
            sent = _metric(port, "shardex_accounts_link", "forwards")
            os.kill(engine, signal.SIGSTOP)
            try:
                for k in range(10):
                    assert c.place("BTC-USD", "buy", "0.01", "50", account=taker,
                                   id=f"late-{k}").ok  # fmt: skip
                # the 10 forwards left the account shard (into the frozen engine's socket)
                _wait(lambda: _metric(port, "shardex_accounts_link", "forwards") >= sent + 10,
                      "the forwards sent", 30)  # fmt: skip
            finally:
                os.kill(engine, signal.SIGKILL)
            for k in range(10):
                _wait(lambda k=k: c.order_status("BTC-USD", f"late-{k}",
                                                 account=taker)["state"] == "live",
                      f"late-{k} on the book", 30)  # fmt: skip
            assert _metric(cl.layout.account_metrics_port(0), "shardex_accounts_link",
                           "journal") > 0  # fmt: skip
            _converged(cl, r, 2, timeout=30.0)
            lines, ok = audit_report(c.audit())
            assert ok, lines
        out = cl.output()
        assert "no longer holds" not in out and "ALERT" not in out.replace("ALERT refused", ""), [
            ln for ln in out.splitlines() if "ALERT" in ln
        ]
    finally:
        cl.stop()


@pytest.mark.timeout(90)
def test_live_audit_exits_1_naming_the_asset_when_money_appears():
    """``shardex audit`` on a live cluster: exit 0 while the books balance; then account shard
    0's state is forged while it is down (a snapshot crediting 5 USD as trade inflow that no
    other account paid: each shard's own check still passes, only the cross-shard identity
    can catch it), and after its restart the audit exits 1 naming USD and the 5.00."""
    from shardex.config import load_markets
    from shardex.journal import Journal
    from tests.support.cluster import Cluster

    cl = Cluster(1, accounts=2)
    sup = cl.proc.pid
    audit = [sys.executable, "-m", "shardex.cli", "audit", "--endpoint", cl.endpoint,
             *cl.key_args()]  # fmt: skip
    try:
        victim_acct = next(a for a in (f"v{k}" for k in range(50)) if account_shard_for(a, 2) == 0)
        with cl.client() as c:
            assert c.deposit(victim_acct, "USD", "100", ref="v-usd").ok
            assert c.deposit("someone-else", "BTC", "1", ref="s-btc").ok
        clean = subprocess.run(audit, capture_output=True, text=True, timeout=30)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert "audit: ok" in clean.stdout

        victim = cl.child_pid("accounts.0")
        os.kill(sup, signal.SIGSTOP)
        try:
            os.kill(victim, signal.SIGKILL)
            _wait(lambda: _dead(victim), "account shard 0 dead")
            fac = AccountMachineFactory(0, 2, lambda s: shard_for(s, 1))
            j = Journal(os.path.join(cl.data_dir, "accounts-0"), load_markets(None), machine=fac)
            m = j.recover().engine
            units = m.core.table.to_units("USD", D(5))
            m.core.balances[victim_acct]["USD"][0] += units  # 5 USD out of thin air ...
            m.core.flow["USD"] = m.core.flow.get("USD", 0) + units  # ... booked as a trade
            m.core.check_integrity()  # the shard alone cannot see it
            j.snapshot(m)
            j.close()
        finally:
            os.kill(sup, signal.SIGCONT)
        with cl.client() as c:
            _wait(lambda: c.balance(victim_acct)["USD"][0] == D(105), "forged shard back", 20)
        bad = subprocess.run(audit, capture_output=True, text=True, timeout=30)
        assert bad.returncode == 1, bad.stdout + bad.stderr
        usd = [ln for ln in bad.stdout.splitlines() if ln.startswith("USD")]
        assert len(usd) == 1 and "VIOLATION" in usd[0], bad.stdout
        assert "105" in usd[0] and "100" in usd[0] and "inflow 5" in usd[0], usd[0]
        assert "difference 5" in usd[0] and "money appeared" in usd[0], usd[0]
        assert "audit: FAILED" in bad.stdout
        btc = [ln for ln in bad.stdout.splitlines() if ln.startswith("BTC")]
        assert btc and btc[0].endswith("ok")  # only the asset that was forged is named
    finally:
        cl.stop()

"""The web page in a real browser: a real cluster (one engine shard, one account shard, the
bridge, the candles worker, a gateway) and two headless Chromium sessions with their own
cookies, one per API key. Log in (the page signs the login with WebCrypto), place an order and
see it rest in the ladder, cross it from the other session, see the trade on both tapes and on
the chart and the ladder shrink, the private panels (open orders, fills, balances) agree with
the cluster, cancel from the open orders; then the gateway is killed: the page reconnects,
resyncs its book and asks to log in again (sessions are the gateway's memory). Screenshots of
each step go to ``$SHARDEX_ARTIFACTS/browser`` (else the test's tmp directory); docs/web.md."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

from shardex.tools.latplot import plot
from tests.support.browser import Browser, artifacts_dir, missing
from tests.support.cluster import Cluster
from tests.support.wait import wait_until

SYMBOL = "BTC-USD"
PRICE, QTY, CROSS, LEFT = "30000.00", "0.0100", "0.0040", "0.0060"


def _url(cluster: Cluster) -> str:
    return f"http://127.0.0.1:{cluster.layout.gateway_port(0)}"


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _api_key(cluster: Cluster, account: str, *how: str) -> dict[str, Any]:
    """An API key for ``account`` (or, with ``how`` = ("--role", "reader"...), of that role)."""
    args = how or ("--account", account)
    proc = subprocess.run([sys.executable, "-m", "shardex.cli", "keys", "add", *args, "--api",
                           "--data-dir", cluster.data_dir],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(Path(proc.stdout.split("API key:")[1].split()[0]).read_text())


@pytest.fixture(scope="module")
def shots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    why = missing()
    if why:
        asked = any("browser" in str(a) for a in request.config.args) or os.environ.get("CI")
        if asked:  # tests/run.sh installs it: absent here is a broken set-up, said loudly
            pytest.fail(f"the browser tier was asked for but {why}")
        pytest.skip(f"{why}: `bash tests/run.sh tests/browser` installs it")
    out = artifacts_dir(tmp_path_factory.mktemp("screenshots"))
    print(f"screenshots: {out}")
    return out


@pytest.fixture(scope="module")
def world(shots: Path) -> Iterator[dict[str, Any]]:
    """The cluster, a funded account per key, a logged-out browser per key."""
    c = Cluster(1, redis="embedded", gateways=1, accounts=1, without=("history-writer",))
    opened: list[Browser] = []
    try:
        url = _url(c)
        wait_until(lambda: _status(url + "/healthz") == 200, 60, "the gateway is up")
        with c.client() as admin:
            assert admin.deposit("wa", "USD", "1000", ref="web-wa").ok
            assert admin.deposit("wb", "BTC", "1", ref="web-wb").ok
        keys = {"wa": _api_key(c, "wa"), "wb": _api_key(c, "wb")}
        for name in keys:
            opened.append(Browser(shots, name))
        yield {"cluster": c, "url": url, "keys": keys, "wa": opened[0], "wb": opened[1],
               "shots": shots}
    finally:
        for b in opened:
            b.close()
        c.stop()


def _el(b: Browser, css: str) -> Any:
    found = b.driver.find_elements("css selector", css)
    return found[0] if found else None


def _cell(b: Browser, css: str) -> str | None:
    el = _el(b, css)
    return el.text if el is not None else None


def _open_and_login(b: Browser, url: str, key: dict[str, Any]) -> None:
    b.driver.get(f"{url}/?symbol={SYMBOL}")
    b.until(lambda d: _cell(b, "#conn") == "live", "the market data connection")
    b.driver.find_element("id", "key-id").send_keys(key["key_id"])
    b.driver.find_element("id", "secret").send_keys(key["secret"])
    b.driver.find_element("id", "login").click()
    b.until(lambda d: _el(b, "#who").is_displayed(), "logged in")
    assert b.driver.find_element("id", "secret").get_attribute("value") == ""  # not kept
    cookie = {c["name"]: c for c in b.driver.get_cookies()}["shardex_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    stored = b.driver.execute_script("return JSON.stringify([localStorage, sessionStorage, "
                                     "document.cookie])")  # fmt: skip
    assert key["secret"] not in stored and cookie["value"] not in stored


def _order(b: Browser, side: str, price: str, qty: str) -> None:
    b.driver.find_element("id", f"side-{side}").click()
    for field, value in (("price", price), ("qty", qty)):
        el = b.driver.find_element("id", field)
        el.clear()
        el.send_keys(value)
    b.driver.find_element("id", "place").click()


def _bid(b: Browser) -> str | None:
    return _cell(b, f'#bids tr[data-price="{PRICE}"] td.qty')


def _login_and_trade(world: dict[str, Any]) -> None:
    """Both sessions log in, alice's bid rests, bob crosses part of it: once per cluster (a
    test of this file that another xdist worker takes starts here on its own cluster)."""
    if world.get("traded"):
        return
    wa, wb, url = world["wa"], world["wb"], world["url"]
    _open_and_login(wa, url, world["keys"]["wa"])
    wa.shot("logged-in")
    # the WebSocket opened again with the cookie: the user channel takes the session's key
    wa.until(lambda d: _el(wa, "#who").get_attribute("data-user") == "live", "the user channel")
    _order(wa, "buy", PRICE, QTY)
    wa.until(lambda d: _bid(wa) == QTY, f"the bid {QTY} @ {PRICE} in the ladder")
    assert "✓" in _cell(wa, "#book-state")  # every book message's checksum matched
    wa.shot("resting")
    _open_and_login(wb, url, world["keys"]["wb"])
    wb.until(lambda d: _bid(wb) == QTY, "the same bid in the other session's ladder")
    _order(wb, "sell", PRICE, CROSS)
    world["traded"] = True


def test_place_rest_in_the_ladder_cross_from_another_session_and_see_the_trade(world) -> None:
    _login_and_trade(world)
    for b in (world["wa"], world["wb"]):
        b.until(lambda d, b=b: _cell(b, "#tape tr.trade td:nth-child(2)") == PRICE
                and _cell(b, "#tape tr.trade td:nth-child(3)") == CROSS, "the trade on the tape")
        b.until(lambda d, b=b: _bid(b) == LEFT, f"the bid down to {LEFT}")
        assert "✓" in _cell(b, "#book-state")
        prices = [td.text for td in b.driver.find_elements("css selector", "#tape td:nth-child(2)")]
        assert prices == [PRICE], prices  # the one trade, no row made of a control message
        # the chart: the candles worker's candle of the trade, through GET /v1/candles
        b.until(lambda d, b=b: _el(b, "#chart").get_attribute("data-candles") == "1",
                "the trade's candle on the chart")
        b.shot("traded")


def _nonzero(b: dict[str, tuple[Decimal, Decimal]]) -> dict[str, tuple[Decimal, Decimal]]:
    return {asset: v for asset, v in b.items() if any(v)}


def test_the_private_panels_agree_with_the_cluster_and_cancel_works(world) -> None:
    _login_and_trade(world)
    wa, c = world["wa"], world["cluster"]
    wa.until(lambda d: _cell(wa, "#orders tr[data-id] td:nth-child(3)") == PRICE,
             "the open order in the panel")
    wa.until(lambda d: _cell(wa, "#fills tr.fill td:nth-child(3)") == PRICE, "the fill")
    with c.client() as admin:
        want = _nonzero(admin.balance("wa"))

    def shown() -> dict[str, tuple[Decimal, Decimal]]:
        out = {}
        for tr in wa.driver.find_elements("css selector", "#balances tr[data-asset]"):
            cells = [td.text for td in tr.find_elements("css selector", "td")]
            out[cells[0]] = (Decimal(cells[1]), Decimal(cells[2]))
        return _nonzero(out)

    wa.until(lambda d: shown() == want, f"the balances the cluster has ({want})")
    assert want["BTC"][0] > 0 and want["USD"][0] < Decimal("1000")  # the trade moved them
    wa.shot("panels")
    wa.until(lambda d: wa.click("#orders tr[data-id] button.cancel"), "the cancel button")
    wa.until(lambda d: _el(wa, "#orders tr[data-id]") is None, "the order gone from the panel")
    wa.until(lambda d: _bid(wa) is None, "the bid gone from the ladder")
    wa.shot("cancelled")


def _numbers(b: Browser, table: str, cells: tuple[str, ...]) -> bool:
    """Every row of the operator page's ``table`` shows a number in each of ``cells``."""
    rows = b.driver.find_elements("css selector", f"#{table} tr[data-shard]")
    for tr in rows:
        for cls in cells:
            text = tr.find_element("css selector", f"td.{cls}").text
            if not text.replace(".", "", 1).isdigit():
                return False
    return bool(rows)


def test_the_operator_page_shows_each_shards_numbers_and_a_latency_plot_opens(world) -> None:
    """An operator (a reader API key) logs in on the trading page, follows its link to /ops
    and sees, while orders flow, latency and throughput for every engine and account shard;
    then a ``loadgen --plot`` picture opens in the browser (screenshots of both)."""
    c, url = world["cluster"], world["url"]
    ops = Browser(world["shots"], "ops")
    try:
        _open_and_login(ops, url, _api_key(c, "", "--role", "reader", "--name", "web-ops"))
        ops.driver.find_element("id", "ops-link").click()
        ops.until(lambda d: _cell(ops, "#conn") == "live", "the operator numbers")
        n = iter(range(10**6))

        with c.client() as admin:

            def flowing(_: Any) -> bool:
                """One more order and its cancel (through the account shard to the engine),
                then: are the numbers shown for each shard?"""
                oid = f"ops-{next(n)}"
                assert admin.place(SYMBOL, "buy", "0.0010", "1000.00", id=oid, account="wa").ok
                admin.cancel(SYMBOL, oid, account="wa")
                return (_numbers(ops, "engines", ("ep50", "ep99", "cps", "backlog"))
                        and _numbers(ops, "accounts", ("p50", "p99", "cps")))  # fmt: skip

            ops.until(flowing, "latency and throughput for every shard", timeout=60)
        ops.until(lambda d: int(_el(ops, "#history").get_attribute("data-points")) > 2, "chart")
        ops.shot("ops")
        # (the plot of a fixed histogram: a real run's would leave its orders in the book
        # the other tests read; `loadgen --plot` itself runs in test_observability.py)
        hist = HdrHistogram(1, 60_000_000, 3)
        for us in range(200, 20_000, 7):
            hist.record_value(us if us % 1000 else us * 5)  # (a tail of slow ones)
        svg = world["shots"] / "loadgen-plot.svg"
        svg.write_text(plot(hist, "loadgen --plot: a fixed histogram"))
        ops.driver.get(svg.as_uri())
        ops.until(lambda d: _el(ops, "polyline") is not None, "the plot in the browser")
        ops.shot("loadgen-plot")
    finally:
        ops.close()


def test_a_gateway_restart_reconnects_resyncs_the_book_and_asks_to_log_in_again(world) -> None:
    _login_and_trade(world)
    wa, wb, c = world["wa"], world["wb"], world["cluster"]
    _order(wb, "sell", "31000.00", "0.0010")  # a level that outlives the restart
    wb.until(lambda d: _cell(wb, '#asks tr[data-price="31000.00"] td.qty') == "0.0010", "ask")
    wb.driver.find_element("id", "logout").click()
    wb.until(lambda d: _el(wb, "#login-form").is_displayed(), "logged out")
    assert wb.driver.execute_script(
        "return fetch('/v1/session').then(r => r.status)") == 401
    starts = c.output().count("started gateway")
    os.kill(c.child_pid("gateway"), signal.SIGKILL)
    wa.until(lambda d: _cell(wa, "#conn") == "reconnecting", "the page sees the gateway gone")
    wa.shot("gateway-down")
    wait_until(lambda: c.output().count("started gateway") > starts, 60, "the gateway restarted")
    wa.until(lambda d: _cell(wa, "#conn") == "live", "reconnected", timeout=60)
    wa.until(lambda d: _cell(wa, '#asks tr[data-price="31000.00"] td.qty') == "0.0010",
             "the book resynced from a new snapshot")
    wa.until(lambda d: _el(wa, "#login-form").is_displayed(), "asked to log in again")
    assert "log in again" in _cell(wa, "#message")
    wa.shot("after-restart")

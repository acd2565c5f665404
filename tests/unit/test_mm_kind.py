"""The market maker as a process kind: ``shardex up --mm`` starts it with the cluster's admin
key and its metrics port (and only then), the supervisor stops it before the cluster (its
cancels need the shards), and its metrics say what its state holds. No process started."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from shardex.cli import main
from shardex.cli.mm import metrics_port_of, mm_config
from shardex.engine import DEFAULT_MARKETS
from shardex.kinds import MM, Plan, cluster_ports, spawns
from shardex.kinds.files import prometheus_config
from shardex.layout import Layout
from shardex.node.supervisor import STOP_FIRST_GRACE, Child, Supervisor, build_children
from shardex.tools.mm import MarketMaker, MMConfig, MMError
from shardex.tools.mmreport import MMCollector, Totals
from tests.support.mmstate import pair_state

LAYOUT = Layout("127.0.0.1", 25000, shards=1, accounts=1)


def _params(values: dict[str, Any]) -> dict[str, Any]:
    cmd = main.get_command(click.Context(main), "mm")
    assert cmd is not None
    with cmd.make_context("mm", MM.argv(values)[1:]) as ctx:
        return dict(ctx.params)


@pytest.mark.parametrize("keys", ["/k", None], ids=["secure", "insecure"])
def test_up_mm_starts_the_bot_with_the_admin_key_and_its_port(keys: str | None) -> None:
    assert all(s.name != "mm" for _, s in spawns(Plan(LAYOUT, keys_dir=keys)))  # off: none
    plan = Plan(LAYOUT, keys_dir=keys, mm=True)
    (spawn,) = [s for k, s in spawns(plan) if k is MM]
    cfg = mm_config(LAYOUT.frontend, _params(spawn.values))
    assert cfg.endpoint == LAYOUT.frontend and cfg.metrics_port == LAYOUT.mm_metrics_port == 25009
    assert cfg.key == ("/k/admin.key" if keys else False)
    assert spawn.stop_first
    assert LAYOUT.mm_metrics_port in cluster_ports(plan)
    assert LAYOUT.mm_metrics_port not in cluster_ports(Plan(LAYOUT, keys_dir=keys))
    (child,) = [c for c in build_children(LAYOUT, None, 10, False, "INFO", mm=True)
                if c.name == "mm"]  # fmt: skip
    assert child.first and child.grace == STOP_FIRST_GRACE


def test_prometheus_scrapes_the_bot_only_when_it_runs() -> None:
    assert "shardex-mm" not in prometheus_config(LAYOUT)
    assert "'127.0.0.1:25009'" in prometheus_config(LAYOUT, optional=("mm",))


def test_up_mm_without_the_account_tier_is_refused_and_with_it_planned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shardex.cli.up as up_mod

    started: list[Any] = []
    monkeypatch.setattr(up_mod, "_check_free", lambda *a: None)
    monkeypatch.setattr(up_mod, "_run", lambda *a: started.append(a) or 0)
    base = ["up", "--shards", "1", "--base-port", "25000", "--insecure", "--mm",
            "--data-dir", str(tmp_path / "data")]  # fmt: skip
    res = CliRunner().invoke(main, [*base, "--accounts", "0"])
    assert res.exit_code == 2 and "--mm needs the account tier" in res.output
    out = tmp_path / "p.yml"
    res = CliRunner().invoke(main, [*base, "--prometheus-config", str(out)])
    assert res.exit_code == 0, res.output
    assert started[0][0].mm and "shardex-mm" in out.read_text()


class _Proc:
    """A child process as the supervisor sees it, recording what it was told when."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log, self.done = name, log, False

    def poll(self) -> int | None:
        return 0 if self.done else None

    def terminate(self) -> None:
        self.log.append(f"term {self.name}")

    def wait(self, timeout: float | None = None) -> int:
        self.log.append(f"wait {self.name}")
        self.done = True
        return 0


def test_the_supervisor_stops_the_bot_before_the_cluster() -> None:
    log: list[str] = []
    children = [Child("router", []), Child("engine.0", []), Child("mm", [], first=True)]
    for c in children:
        c.proc = _Proc(c.name, log)  # type: ignore[assignment]
    Supervisor(children).shutdown()
    assert log[:2] == ["term mm", "wait mm"]  # gone before anything else is told to stop
    assert sorted(log[2:]) == sorted(["term router", "term engine.0", "wait router",
                                      "wait engine.0"])  # fmt: skip


def test_the_metrics_port_defaults_to_the_layouts_base_plus_9() -> None:
    assert metrics_port_of("tcp://127.0.0.1:7000", None) == 7009
    assert metrics_port_of("tcp://h:7000,tcp://h:7011", None) == 7009
    assert metrics_port_of("ipc:///tmp/r", None) == 0
    assert metrics_port_of("tcp://127.0.0.1:7000", 0) == 0


def test_the_metrics_are_the_bots_integers() -> None:
    class Bot:
        states = [pair_state(DEFAULT_MARKETS["BTC-USD"])]
        totals = Totals(cycles=4, taker_orders=2)

    s = Bot.states[0]
    s.inventory, s.pnl, s.quotes, s.amends, s.fills = -3, -1234, 6, 9, 5
    s.rejects["post_only_cross"] += 2
    got = {(m.name, tuple(sorted(x.labels.items()))): x.value
           for m in MMCollector(Bot()).collect() for x in m.samples}  # fmt: skip
    pair = (("pair", "BTC-USD"),)
    assert got[("shardex_mm_inventory_lots", pair)] == -3
    assert got[("shardex_mm_pnl_quote_units", pair)] == -1234
    assert got[("shardex_mm_reference_ticks", pair)] == 3_000_000
    assert got[("shardex_mm_amends", pair)] == 9 and got[("shardex_mm_quotes", pair)] == 6
    assert got[("shardex_mm_rejects", (("code", "post_only_cross"), *pair))] == 2
    assert got[("shardex_mm_rounds", ())] == 4


@pytest.mark.parametrize(
    ("run", "honcho", "quotes"),
    [("auto", None, True), ("auto", "mm.1", False), ("on", "mm.1", True), ("off", None, False)],
)
def test_under_honcho_the_bot_only_waits_unless_asked(
    monkeypatch: pytest.MonkeyPatch, run: str, honcho: str | None, quotes: bool
) -> None:
    """As ``shardex up`` (off unless ``--mm``): the Procfile's ``mm`` waits unless
    ``SHARDEX_MM=on``; run by hand it quotes. (Neither path is run here: both are stubbed.)"""
    import shardex.cli.mm as mm_mod

    went: list[str] = []
    monkeypatch.setattr(mm_mod, "idle_off", lambda: went.append("idle"))
    monkeypatch.setattr(mm_mod, "find", lambda *a: went.append("quote") or 1 / 0)
    if honcho:
        monkeypatch.setenv("HONCHO_PROCESS_NAME", honcho)
    else:
        monkeypatch.delenv("HONCHO_PROCESS_NAME", raising=False)
    monkeypatch.setenv("SHARDEX_MM", run)  # (the variable behind --run, as .env sets it)
    CliRunner().invoke(main, ["mm"])
    assert went == (["quote"] if quotes else ["idle"])


def test_without_the_account_tier_or_with_bad_pairs_or_prices_the_bot_says_why() -> None:
    class NoTier:
        markets = dict(DEFAULT_MARKETS)
        accounts = 0

    with pytest.raises(MMError, match="needs the account tier"):
        asyncio.run(MarketMaker(NoTier(), MMConfig()).setup())  # type: ignore[arg-type]
    NoTier.accounts = 1
    off_grid = MMConfig(pairs=("BTC-USD",), prices={"BTC-USD": "30000.001"})
    with pytest.raises(MMError, match=r"--price BTC-USD=30000.001: not a price"):
        asyncio.run(MarketMaker(NoTier(), off_grid).setup())  # type: ignore[arg-type]
    with pytest.raises(MMError, match="unknown pairs NOPE-USD"):
        asyncio.run(MarketMaker(NoTier(), MMConfig(pairs=("NOPE-USD",))).setup())  # type: ignore[arg-type]

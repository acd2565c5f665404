"""The process descriptions (``shardex.kinds``) are the one source of each process kind: the
checked-in Procfile/.env are what they generate, every option survives description → argv →
click → parameter, and every child ``shardex up`` starts gets the Config its layout says."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from shardex.cli import COMMANDS, main
from shardex.cli.accounts import accounts_config
from shardex.cli.bridge import bridge_config
from shardex.cli.candles import candles_config
from shardex.cli.engine import engine_config
from shardex.cli.gateway import gateway_config
from shardex.cli.history import writer_settings
from shardex.cli.router import router_config
from shardex.kinds import KINDS, Plan, cluster_ports, spawns
from shardex.kinds.files import dotenv, procfile, prometheus_config
from shardex.layout import Layout
from shardex.node.supervisor import REDIS_NOISE, SNAPSHOT_GRACE, build_children

ROOT = Path(__file__).resolve().parents[2]
EP = "tcp://127.0.0.1:7001"


def _command(name: str) -> click.Command:
    cmd = main.get_command(click.Context(main), name)
    assert cmd is not None, name
    return cmd


def _parse(argv: list[str]) -> dict[str, Any]:
    """``shardex <kind> ...`` parsed as click would for the process (no process started)."""
    cmd = _command(argv[0])
    with cmd.make_context(argv[0], list(argv[1:])) as ctx:
        return dict(ctx.params)


def test_procfile_and_env_are_what_the_descriptions_generate() -> None:
    assert (ROOT / "Procfile").read_text() == procfile()
    assert (ROOT / ".env").read_text() == dotenv()
    for kind in KINDS:  # every kind with a Procfile line is a shardex command of that name
        if kind.procfile:
            assert kind.procfile == f"shardex {kind.name}"
            assert kind.name in COMMANDS


def _other_value(opt: Any) -> Any:
    """A value of ``opt``'s type that is not its default (so a lost option shows)."""
    if opt.is_flag:
        return True
    t = opt.type
    if isinstance(t, click.Choice):
        return next(c for c in t.choices if c != opt.default)
    if isinstance(t, click.IntRange):
        lo = t.min or 0
        return next(v for v in (lo, lo + 1) if v != opt.default)
    if isinstance(t, click.FloatRange):
        return (t.min or 0) + 1.5
    if t is int:
        return 7
    if t is float:
        return 2.5
    if opt.callback is not None or opt.name in ("engine_links",):
        return EP
    return "some-value"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_every_option_round_trips_through_argv_and_click(kind: Any) -> None:
    for opt in kind.options:
        value = _other_value(opt)
        params = _parse(kind.argv({opt.name: value}))
        assert params[opt.name] == value, (kind.name, opt.flag)
    # the command has exactly the declared options (plus --help)
    declared = {o.name for o in kind.options}
    assert {p.name for p in _command(kind.name).params} == declared
    with pytest.raises(KeyError):
        kind.argv({"no_such_option": 1})


def _plan(tmp_path: Path, replicas: int) -> Plan:
    layout = Layout("127.0.0.1", 21000, shards=2, routers=2, accounts=2, gateways=2)
    return Plan(layout, pin=False, data_dir=str(tmp_path), fsync="none",
                redis="redis://127.0.0.1:1/0", pub_hwm=500, replicas=replicas)  # fmt: skip


def _engine(plan: Plan, params: dict[str, Any], i: int, r: int) -> None:
    lay = plan.layout
    cfg, rep = engine_config(**params)
    assert (cfg.index, cfg.shards, cfg.accounts) == (i, lay.shards, lay.accounts)
    assert cfg.router == lay.backends and cfg.pub_hwm == 500 and not cfg.pin
    assert (cfg.direct, cfg.pub) == (lay.replica_direct(i, r), lay.replica_pub(i, r))
    assert cfg.metrics_port == lay.replica_metrics(i, r)
    assert cfg.account_link == lay.replica_account_link(i, r)
    assert cfg.keys_dir is None and cfg.fsync == "none"
    suffix = f".r{r}" if r else ""
    assert cfg.journal_dir == os.path.join(plan.data_dir, f"shard-{i}{suffix}")
    if plan.replicas == 1:
        assert rep is None
    else:
        assert rep is not None and (rep.replica, rep.redis_url) == (r, plan.redis)
        assert rep.repl == rep.repl_at == lay.repl(i, r)


def _accounts(plan: Plan, params: dict[str, Any], j: int, r: int) -> None:
    lay = plan.layout
    planned = accounts_config(**params)
    assert planned is not None
    cfg, rep = planned
    assert (cfg.index, cfg.shards, cfg.engines, cfg.router) == (j, 2, 2, lay.backends)
    links = lay.account_links if plan.replicas == 1 else lay.replica_account_links
    assert cfg.engine_links == links.split(",")
    assert cfg.direct == lay.account_replica_direct(j, r)
    assert cfg.pub == lay.account_replica_pub(j, r)
    assert cfg.metrics_port == lay.account_replica_metrics(j, r)
    suffix = f".r{r}" if r else ""
    assert cfg.journal_dir == os.path.join(plan.data_dir, f"accounts-{j}{suffix}")
    assert (rep is None) == (plan.replicas == 1)
    if rep is not None:
        assert rep.repl == lay.account_repl(j, r)


@pytest.mark.parametrize("replicas", [1, 2])
def test_every_child_gets_the_config_its_layout_says(tmp_path: Path, replicas: int) -> None:
    plan = _plan(tmp_path, replicas)
    lay = plan.layout
    seen = []
    for kind, spawn in spawns(plan):
        params = _parse(kind.argv(spawn.values))
        r = 1 if spawn.name.endswith(".r1") else 0
        index = params.get("index")
        seen.append(spawn.name)
        if kind.name == "router":
            cfg = router_config(**params)
            assert cfg.frontend == lay.router_frontend(index)
            assert cfg.backend == lay.router_backend(index)
            assert (cfg.shards, cfg.accounts, cfg.metrics_port) == (2, 2, lay.router_metrics(index))
        elif kind.name == "engine":
            _engine(plan, params, index, r)
        elif kind.name == "accounts":
            _accounts(plan, params, index, r)
        elif kind.name == "gateway":
            gw = gateway_config(**params)
            assert (gw.port, gw.endpoint, gw.redis_url) == \
                (lay.gateway_port(index), lay.frontends, plan.redis)  # fmt: skip
            assert gw.key is False and gw.keys_dir is None  # the plan is insecure: said
            # the operator page reads every router's exporter (as many as the endpoint names)
            assert gw.layout is not None and gw.layout.base_port == lay.base_port
            assert gw.layout.routers == lay.routers
        elif kind.name == "candles-worker":
            got = candles_config(**params)
            assert (got.redis_url, got.metrics_port) == (plan.redis, lay.candles_metrics_port)
        elif kind.name == "history-writer":
            s = writer_settings(**params)
            assert (s.cfg.shards, s.cfg.accounts, s.redis_url) == (2, 2, plan.redis)
            assert s.metrics_port == lay.history_metrics_port
            assert s.db_url == f"sqlite:///{tmp_path / 'history.sqlite'}"
        else:
            cfg = bridge_config(**params)
            assert (cfg.router, cfg.redis_url) == (lay.frontend, plan.redis)
            assert cfg.metrics_port == lay.bridge_metrics_port
    per_shard = ["", ".r1"] if replicas == 2 else [""]
    engines = [f"engine.{i}{s}" for i in range(2) for s in per_shard]
    accounts = [f"accounts.{j}{s}" for j in range(2) for s in per_shard]
    assert seen == ["router", "router.1", *engines, *accounts, "bridge", "candles-worker",
                    "history-writer", "gateway", "gateway.1"]


@pytest.mark.parametrize("replicas", [1, 2])
@pytest.mark.parametrize("accounts", [0, 1, 3])
def test_the_kinds_bind_exactly_the_layouts_ports(accounts: int, replicas: int) -> None:
    layout = Layout("127.0.0.1", 22000, shards=3, routers=2, accounts=accounts)
    ports = cluster_ports(Plan(layout, replicas=replicas))
    expected = layout.ports() + (layout.replica_ports() if replicas > 1 else [])
    assert len(ports) == len(set(ports))
    assert set(ports) == set(expected)
    cfg = prometheus_config(layout, replicas=replicas)
    for port in (layout.router_metrics(1), layout.bridge_metrics_port,
                 layout.replica_metrics(2, replicas - 1)):  # fmt: skip
        assert f"'127.0.0.1:{port}'" in cfg
    assert ("shardex-accounts" in cfg) == bool(accounts)


def test_the_command_list_summaries_are_the_commands_own() -> None:
    """``shardex --help`` lists commands without importing them: from ``COMMANDS``, which
    must say what each command's own docstring says."""
    for name, (_, _, summary) in COMMANDS.items():
        cmd = _command(name)
        for limit in (45, 300):
            assert click.utils.make_default_short_help(summary, limit) == \
                cmd.get_short_help_str(limit), name  # fmt: skip
    out = CliRunner().invoke(main, ["--help"]).output
    assert all(name in out for name in COMMANDS)


@pytest.mark.parametrize(
    "argv",
    [["router"], ["engine", "--shard", "0"], ["accounts", "--shard", "0", "--shards", "1"],
     ["bridge"], ["candles-worker"], ["redis"], ["history-writer", "--accounts", "1"],
     ["gateway"]],  # fmt: skip
    ids=lambda a: a[0],
)
def test_a_base_port_the_layout_cannot_have_is_one_line(argv: list[str]) -> None:
    """Regression: ``shardex router --base-port 65500`` died with a ValueError traceback."""
    res = CliRunner().invoke(main, [*argv, "--base-port", "65500", "--insecure"])
    assert res.exit_code == 2, res.output
    assert "Error: --base-port 65500: " in res.output and "Traceback" not in res.output
    assert not isinstance(res.exception, ValueError)


def test_build_children_runs_each_kind_as_its_shardex_command(tmp_path: Path) -> None:
    layout = Layout("127.0.0.1", 23000, shards=1, accounts=1)
    children = build_children(layout, None, 100, True, "DEBUG", str(tmp_path))
    names = ["redis", "router", "engine.0", "accounts.0", "bridge", "candles-worker",
             "history-writer", "gateway"]
    assert [c.name for c in children] == names
    redis = children[0]
    assert redis.drop == REDIS_NOISE and redis.argv[1:3] == ["--port", str(layout.redis_port)]
    for child in children[1:]:
        kind = child.name.split(".")[0]
        exe = [sys.executable, "-m", "shardex.cli", "--log-level", "DEBUG", kind]
        assert child.argv[:6] == exe and "--insecure" in child.argv  # never insecure by omission
        assert child.grace == (SNAPSHOT_GRACE if kind in ("engine", "accounts") else None)
    with pytest.raises(ValueError, match="--replicas 2 needs Redis"):
        build_children(layout, None, 100, True, "INFO", str(tmp_path), redis=None, replicas=2)


@pytest.mark.parametrize("replicas", [1, 2])
def test_up_writes_the_prometheus_config_of_its_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, replicas: int
) -> None:
    """``shardex up --prometheus-config`` (nothing started: the supervisor's run is stubbed)."""
    import shardex.cli.up as up_mod

    started: list[Any] = []
    monkeypatch.setattr(up_mod, "_check_free", lambda *a: None)
    monkeypatch.setattr(up_mod, "_run", lambda *a: started.append(a) or 0)
    out = tmp_path / "prometheus.yml"
    res = CliRunner().invoke(main, [
        "up", "--shards", "2", "--base-port", "24000", "--insecure", "--replicas", str(replicas),
        "--data-dir", str(tmp_path / "data"), "--prometheus-config", str(out),
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    layout = Layout("127.0.0.1", 24000, shards=2, accounts=1)
    assert out.read_text() == prometheus_config(layout, replicas=replicas)
    assert "scrape_interval: 5s" in out.read_text() and len(started) == 1


@pytest.mark.parametrize("mode", ["local", "replicated"])
@pytest.mark.parametrize("argv", [["engine", "--shard", "0"],
                                  ["accounts", "--shard", "0", "--shards", "1"]],
                         ids=lambda a: a[0])  # fmt: skip
def test_a_single_process_refuses_a_durability_it_cannot_keep(argv: list[str], mode: str) -> None:
    """Regression: ``shardex engine --role single --durability replicated`` started and
    replied after its own fsync alone (no standby), the option silently ignored; it is
    refused like ``shardex up --durability X`` without ``--replicas 2``. The default stays."""
    make = engine_config if argv[0] == "engine" else accounts_config
    params = _parse([*argv, "--insecure", "--role", "single", "--durability", mode])
    with pytest.raises(click.UsageError, match=f"--durability {mode} needs --role auto"):
        make(**params)
    assert make(**_parse([*argv, "--insecure", "--role", "single"])) is not None


def test_a_gateway_under_honcho_serves_on_its_process_numbers_port(monkeypatch) -> None:
    """``honcho start -c gateway=2``: gateway.1 and gateway.2 take base+86 and base+87."""
    opts = {"host": "127.0.0.1", "base_port": 20000, "index": None, "bind": None, "port": None,
            "endpoint": None, "redis_url": None, "markets_file": None, "depth": 25,
            "queue": 1000, "data_dir": None, "keys_dir": None, "insecure": True}  # fmt: skip
    monkeypatch.setenv("HONCHO_PROCESS_NAME", "gateway.2")
    assert gateway_config(**opts).port == 20087
    assert gateway_config(**{**opts, "index": 0}).port == 20086  # as given
    monkeypatch.delenv("HONCHO_PROCESS_NAME")
    assert gateway_config(**opts).port == 20086


def test_up_without_leaves_out_only_the_named_optional_consumers(tmp_path: Path) -> None:
    """``shardex up --without``: the candles worker and the history writer are left out (no
    child, no port checked), everything else starts as before; anything else is refused."""
    lay = Layout("127.0.0.1", 40000, 1, 1, 1)
    full = Plan(lay, data_dir=str(tmp_path), keys_dir=str(tmp_path / "keys"))
    names = [s.name for _, s in spawns(full)]
    assert {"candles-worker", "history-writer"} <= set(names)
    lean = Plan(lay, data_dir=str(tmp_path), keys_dir=str(tmp_path / "keys"),
                without=frozenset({"candles-worker", "history-writer"}))  # fmt: skip
    assert [s.name for _, s in spawns(lean)] == [
        n for n in names if n not in ("candles-worker", "history-writer")
    ]
    gone = {lay.candles_metrics_port, lay.history_metrics_port}
    assert gone <= set(cluster_ports(full)) and not gone & set(cluster_ports(lean))
    res = CliRunner().invoke(main, ["up", "--without", "bridge"])
    assert res.exit_code == 2 and "'bridge' is not one of" in res.output

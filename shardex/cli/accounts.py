"""``shardex accounts``: run one account shard (balances and holds), alone or as one of two
replicas; its options are declared in ``shardex.kinds.accounts``."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import click

from shardex.cli.base import (
    advertised,
    check_data_dir,
    check_endpoint,
    checked_layout,
    fee_schedule,
    markets,
    placement_of,
    process_keys_dir,
)
from shardex.cli.engine import Replication
from shardex.cli.options import (
    check_durability,
    check_role_auto,
    check_single_durability,
    resolve_accounts,
    resolve_routers,
    resolve_shards,
)
from shardex.health import start_early
from shardex.journal import JournalError
from shardex.kinds import ACCOUNTS
from shardex.layout import LINK_REPLICAS, Layout
from shardex.leasetime import DEFAULT_LEASE_MS
from shardex.node.accounts import AccountsConfig, run_accounts, run_replicated_accounts
from shardex.node.honcho import honcho_index
from shardex.node.replica import replica_dir
from shardex.wire.transport import StopFlag


def _tier(index: int | None, shards: str | None) -> tuple[int, int | None]:
    """(M, this shard's J); J None when M is 0 (the tier is off)."""
    if shards is None:
        if honcho_index() is None:
            raise click.UsageError("--shards M is required (or SHARDEX_ACCOUNTS)")
        shards = "auto"  # a Procfile without SHARDEX_ACCOUNTS: honcho's -c accounts=M (default 1)
    m = resolve_accounts(shards, "--shards")
    if m == 0:
        return 0, None
    if index is None:
        index = honcho_index()
        if index is None:
            raise click.UsageError("--shard is required (or run under honcho: accounts.K)")
    if not 0 <= index < m:
        raise click.UsageError(
            f"account shard {index} out of range for {m} (under honcho, -c accounts=M must "
            "match SHARDEX_ACCOUNTS unless it is auto)"
        )
    return m, index


def _links(engine_links: str | None, layout: Layout, replicas: int) -> list[str]:
    """Each engine shard's account link endpoint(s) (both replicas' joined by ``+``)."""
    default = layout.replica_account_links if replicas > 1 else layout.account_links
    links = (engine_links or default).split(",")
    if len(links) != layout.shards:
        n = layout.shards
        raise click.UsageError(f"--engine-links: {len(links)} endpoints for {n} engines")
    for link in links:
        ends = link.split(LINK_REPLICAS)
        if len(ends) > 2:
            raise click.UsageError(
                f"--engine-links: {link!r} names {len(ends)} replicas (at most 2, joined by "
                f"'{LINK_REPLICAS}')"
            )
        for ep in ends:
            check_endpoint(ep, "--engine-links")
    return links


def accounts_config(**o: Any) -> tuple[AccountsConfig, Replication | None] | None:
    """Account shard J's config from ``shardex accounts``' options, and how it replicates
    (None: ``--role single``); None when the tier is off (M = 0)."""
    m, j = _tier(o["index"], o["shards"])
    if j is None:
        return None
    n = resolve_shards(o["engines"])
    data_dir = o["data_dir"]
    keys = process_keys_dir("accounts", data_dir, o["keys_dir"], o["insecure"])
    table = markets(o["markets_file"])
    fees = fee_schedule(o["markets_file"], table)
    if data_dir:
        check_data_dir(data_dir, n, table, accounts=m)
    layout = checked_layout(o["host"], o["base_port"], n, resolve_routers(o["routers"]), m)
    links = _links(o["engine_links"], layout, o.get("replicas", 1))
    auto = o.get("role", "single") == "auto"
    r = o.get("replica", 0) if auto else 0
    if auto:
        check_role_auto(data_dir, o.get("redis_url"), o["fsync"])
        check_durability(o.get("durability", "both"), m)
    else:
        check_single_durability(o.get("durability", "both"))
    metrics = o["metrics_port"]
    cfg = AccountsConfig(
        index=j, shards=m, engines=n, router=o["router_ep"] or layout.backends,
        engine_links=links, markets=table,
        journal_dir=os.path.join(data_dir, f"accounts-{j}") if data_dir else None,
        fsync=o["fsync"], durability=o.get("durability", "both"),
        metrics_port=layout.account_replica_metrics(j, r) if metrics is None else metrics,
        keys_dir=keys,
        pub=o["pub_ep"] or layout.account_replica_pub(j, r),
        direct=o["direct_ep"] or layout.account_replica_direct(j, r),
        placement=placement_of(data_dir, n),
        fees=fees,
    )  # fmt: skip
    advertise = o.get("advertise")
    if auto or advertise:  # what the routers' topology and the bridge connect to
        for name, ep in (("direct", cfg.direct), ("pub", cfg.pub)):
            if ep:
                cfg.extra[name] = advertised(ep, advertise, f"--{name}")
    if not auto:
        return cfg, None
    cfg.journal_dir = replica_dir(data_dir, j, r, "accounts")
    cfg.lease_ms = o.get("lease_ms", DEFAULT_LEASE_MS)
    repl = o.get("repl") or layout.account_repl(j, r)
    return cfg, Replication(r, o["redis_url"], repl, advertised(repl, advertise, "--repl"))


def idle_off() -> None:
    """The account tier is off (M = 0): one clear line, then wait for SIGTERM/SIGINT and exit
    0 (under honcho an exiting process would stop the whole cluster)."""
    logging.getLogger("shardex.accounts").warning(
        "account tier off (SHARDEX_ACCOUNTS=0): no account shard runs here; this process only "
        "waits. To run M account shards: honcho start -c accounts=M (SHARDEX_ACCOUNTS=auto), "
        "or shardex up --accounts M"
    )
    stop = StopFlag.install()
    while not stop:
        time.sleep(0.2)


@click.command()
@ACCOUNTS.click_options()
def accounts(**options: Any) -> None:
    """Run account shard J of M: balances and holds of the accounts with crc32 % M == J.

    Under honcho (the Procfile's ``accounts: shardex accounts``) J comes from the process name
    and M from SHARDEX_ACCOUNTS (``auto``: ``honcho start -c accounts=M``). With M = 0 the
    process says so and waits for SIGTERM: honcho stops every process when one exits."""
    try:
        planned = accounts_config(**options)
        if planned is None:
            idle_off()
            return
        cfg, rep = planned
        start_early("accounts", cfg.metrics_port)
        if rep is None:
            run_accounts(cfg)
        else:
            run_replicated_accounts(cfg, rep.replica, rep.redis_url, rep.repl, rep.repl_at)
    except (JournalError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None

"""``shardex history`` (read one account's history, or check it against the journals) and
``shardex history-writer`` (the process that writes it; options in ``shardex.kinds.history``)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import redis as redis_lib

from shardex.cli.base import checked_layout, markets, process_keys_dir
from shardex.cli.options import resolve_accounts, resolve_shards
from shardex.history.api import History
from shardex.history.check import check as check_history
from shardex.history.query import COLUMNS, KINDS, QueryError, to_csv
from shardex.history.store import DB_ERRORS, HistoryDbError, Store, dialect_of
from shardex.history.writer import HistoryWriter, WriterConfig
from shardex.kinds import HISTORY
from shardex.kinds.history import DB_FILE, HISTORY_DB
from shardex.metrics import serve
from shardex.redisauth import REDIS_FILE, mask_url
from shardex.tools.tail import TailError, connect, tail_url

log = logging.getLogger("shardex.history")


def db_url(history_db: str | None, data_dir: str | None) -> str:
    """``--history-db``, else SQLite in DATA_DIR (``./data`` without one)."""
    if history_db:
        return history_db
    return "sqlite:///" + os.path.abspath(os.path.join(data_dir or "data", DB_FILE))


def _shown_db(url: str) -> str:
    """A database URL as logged: a PostgreSQL one without its password."""
    return mask_url(url) if dialect_of(url) == "postgresql" else url


def _table(kind: str, rows: list[dict]) -> str:
    cols = COLUMNS[kind]
    cells = [[("" if r[c] is None else str(r[c])) for c in cols] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
              for row in cells]  # fmt: skip
    return "\n".join(lines)


@click.command()
@click.argument("account", required=False)
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    default="orders",
    show_default=True,
    help="Orders (with their status and filled qty), fills, or balance changes.",
)
@click.option("--symbol", help="Only this pair (balances: this asset, or a pair's two assets).")
@click.option("--since", help="From this exchange time on (ms since epoch, or ISO 8601 UTC).")
@click.option("--until", help="Before this exchange time (ms since epoch, or ISO 8601 UTC).")
@click.option("--limit", type=int, default=100, show_default=True, help="Rows per page.")
@click.option("--after", "cursor", help="The cursor a previous page printed: the next page.")
@click.option(
    "--csv", "as_csv", is_flag=True, help="CSV with a header line (the page; --all: every page)."
)
@click.option("--all", "every", is_flag=True, help="Every page, not just one.")
@click.option(
    "--check",
    "do_check",
    is_flag=True,
    help="Instead: check that the history agrees with the journals of DATA_DIR (exit 1 when not).",
)
@click.option(
    "--data-dir",
    default="data",
    show_default=True,
    envvar="SHARDEX_DATA_DIR",
    help="The cluster's data dir (default database, journals for --check).",
)
@click.option(
    "--markets",
    "markets_file",
    type=click.Path(dir_okay=False),
    help="The cluster's markets TOML file, if it has extra markets (--check).",
)
@HISTORY_DB.decorator()
def history(account: str | None, kind: str, symbol: str | None, since: str | None,
            until: str | None, limit: int, cursor: str | None, as_csv: bool, every: bool,
            do_check: bool, data_dir: str, markets_file: str | None,
            history_db: str | None) -> None:  # fmt: skip
    """Show ACCOUNT's order, fill or balance history from the history database.

    Oldest first, one page (--limit) at a time: the last line says how to get the next page
    (--after CURSOR); pages stay right while the writer adds rows. Times are the exchange's
    (UTC); amounts exact decimal strings. --check compares the whole database with the
    cluster's journals instead.
    """
    url = db_url(history_db, data_dir)
    try:
        if do_check:
            _check(url, data_dir, markets_file)
            return
        if not account:
            raise click.UsageError("ACCOUNT is needed (or --check)")
        with History(url) as h:
            filters = {"symbol": symbol, "since": since, "until": until, "limit": limit}
            if every:
                rows = list(h.rows(account, kind, after=cursor, **filters))
                nxt = None
            else:
                page = h.page(account, kind, after=cursor, **filters)
                rows, nxt = page.rows, page.next
    except QueryError as exc:
        raise click.ClickException(f"{exc.code}: {exc}") from None
    except HistoryDbError as exc:
        raise click.ClickException(str(exc)) from None
    if as_csv:
        click.echo(to_csv(kind, rows), nl=False)
    elif rows:
        click.echo(_table(kind, rows))
    else:
        click.echo(f"no {kind} for {account}" + (" after that cursor" if cursor else ""))
    if nxt is not None:
        sys.stdout.flush()  # (the page first, then the line saying how to go on)
        click.echo(f"more: --after {nxt}", err=True)


def _check(url: str, data_dir: str, markets_file: str | None) -> None:
    with Store(url) as store:
        report = check_history(store, data_dir, markets(markets_file))
    counts = ", ".join(f"{t} {n}" for t, n in report.compared.items())
    if report.ok:
        click.echo(f"history agrees with the journals ({counts} rows)")
        return
    for line in report.problems:
        click.echo(line)
    click.echo(f"history DISAGREES with the journals (compared: {counts})")
    sys.exit(1)


@dataclass(frozen=True)
class WriterSettings:
    """What ``shardex history-writer``'s options amount to (the Redis URL still without the
    reader's password: that is read from ``keys_dir`` when connecting)."""

    cfg: WriterConfig
    db_url: str
    redis_url: str | None
    default_redis: str
    keys_dir: str | None
    metrics_port: int


def writer_settings(**o: Any) -> WriterSettings:
    """The writer's settings from its options (the layout's Redis and metrics port unless
    given)."""
    keys = process_keys_dir("history", o["data_dir"], o["keys_dir"], o["insecure"])
    layout = checked_layout(o["host"], o["base_port"])
    cfg = WriterConfig(
        shards=resolve_shards(o["shards"]),
        accounts=resolve_accounts(o["accounts"]),
        batch=o["batch"],
        poll_interval=o["poll_interval"],
    )
    metrics = o["metrics_port"]
    return WriterSettings(cfg, db_url(o["history_db"], o["data_dir"]), o["redis_url"],
                          layout.redis_url, keys,
                          layout.history_metrics_port if metrics is None else metrics)  # fmt: skip


@click.command(name="history-writer")
@HISTORY.click_options()
def history_writer(**o: Any) -> None:
    """Write the cluster's orders, fills and balance changes from Redis to the history
    database, exactly once.

    Reads shardex:orders:<j>, shardex:balances:<j> and shardex:events:<i> as Redis user
    reader; the position in each stream is stored in the same transaction as its rows. With
    no account tier (M = 0) it says so and waits for SIGTERM (honcho stops every process
    when one exits).
    """
    s = writer_settings(**o)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if not s.cfg.accounts:  # (under honcho an exiting process would stop the whole cluster)
        log.warning("account tier off (M = 0): no order has a known account, so there is no "
                    "history to write; this process only waits")  # fmt: skip
        while not stop.wait(1.0):
            pass
        return
    if s.keys_dir and not s.redis_url:  # the reader's password: wait for the cluster's keys
        while not (Path(s.keys_dir) / REDIS_FILE).exists() and not stop.wait(0.2):
            pass
    try:
        store = Store(s.db_url)
        r = connect(s.redis_url, s.default_redis, s.keys_dir)
    except (HistoryDbError, TailError) as exc:
        raise click.ClickException(str(exc)) from None
    serve(s.metrics_port, "history")
    shown = mask_url(tail_url(s.redis_url, s.default_redis, None))
    log.info("history writer up (pid %d): %s → %s (%d engine shard(s), %d account shard(s))",
             os.getpid(), shown, _shown_db(s.db_url), s.cfg.shards, s.cfg.accounts)  # fmt: skip
    try:
        HistoryWriter(s.cfg, r, store).run(stop, (redis_lib.RedisError, OSError, *DB_ERRORS))
    finally:
        store.close()

"""``shardex`` command line: one click group whose commands live in small modules here.

Each command module imports what it needs at its top; the group imports a command's module
only when that command runs (or its help is shown), so ``shardex --help`` and each command
start without importing the node runtimes, the client and loadgen they do not use. The
command list (``COMMANDS``) carries each command's one-line summary for ``shardex --help``;
a test checks it against the command's own docstring.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from shardex.envdoc import document_env

# name → (module, attribute, summary: the first paragraph of the command's help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "account": ("admin_market", "account", "Accounts at runtime (admin key): restrict and "
                "unrestrict; journaled on the account's shard, no restart."),
    "accounts": ("accounts", "accounts", "Run account shard J of M: balances and holds of "
                 "the accounts with crc32 % M == J."),
    "audit": ("money", "audit", "Check conservation on a live cluster: per asset, over every "
              "account shard, balances + fees (+ perp margin) == deposits - withdrawals, and "
              "each shard's own integrity; per perp pair, collateral + funding + insurance fund "
              "== the margin moved; then order by order, that every live order in every book "
              "is covered by its hold and every hold by a live order."),
    "balance": ("money", "balance", "Show ACCOUNT's balances per asset (available, held by "
                "open orders)."),
    "book": ("market", "book", "Show SYMBOL's order book (L2: price, quantity, orders per "
             "level)."),
    "bridge": ("bridge", "bridge", "Write every shard's events to Redis Streams, in order, "
               "exactly once."),
    "cancel-all": ("cancel", "cancel_all", "Cancel every open order of ACCOUNT, in one pair "
                   "(--symbol) or in every pair, and say how many went (an admin key, or the "
                   "account's own)."),
    "candles": ("candles", "candles", "Show PAIR's OHLCV candles (1m 5m 15m 1h 4h 1d), oldest "
                "first, from Redis."),
    "candles-worker": ("candles", "candles_worker", "Keep every pair's candles in Redis, from "
                       "its trades stream, exactly once."),
    "deploy": ("deploy", "deploy", "Deploy a cluster beyond one box: Kubernetes manifests "
               "and the keys they mount."),
    "deposit": ("money", "deposit", "Deposit AMOUNT of ASSET for ACCOUNT (admin key)."),
    "engine": ("engine", "engine", "Run one engine shard: the single writer of the pairs "
               "that hash to it."),
    "feed": ("feed", "feed", "Send index prices of every perp market to its engine shard "
             "(a feed key)."),
    "fee-group": ("fees", "fee_group", "Put ACCOUNT in fee GROUP, a tier name of the fee "
                  "schedule (\"\" for none), admin key; journaled on the account's shard, it "
                  "applies to the orders placed after it."),
    "fees": ("fees", "fees", "Show ACCOUNT's fee tier and the maker/taker rates its new orders "
             "get per market (basis points; a negative maker rate is a rebate), with its fee "
             "group and 30-day volume."),
    "gateway": ("gateway", "gateway", "Serve market data over HTTP and WebSocket: trades, L2 "
                "book, ticker, market list."),
    "history": ("history", "history", "Show ACCOUNT's order, fill or balance history from the "
                "history database."),
    "funding": ("positions", "funding", "Show perp pair SYMBOL's funding: the cumulative "
                "funding index per lot, the next payment's exchange time, the samples so far "
                "and the rounding remainder kept; then its insurance fund and the take-overs a "
                "stale oracle held back."),
    "history-writer": ("history", "history_writer", "Write the cluster's orders, fills and "
                       "balance changes from Redis to the history database, exactly once."),
    "journal": ("replay", "journal", "Look at a shard's journal directory."),
    "keys": ("keys", "keys", "Identity: who may connect and act for which accounts (keys "
             "in DATA_DIR/keys)."),
    "loadgen": ("loadgen", "loadgen", "Drive the cluster with orders and report throughput "
                "and latency percentiles."),
    "margin": ("positions", "margin", "Move AMOUNT of SYMBOL's settle asset from ACCOUNT's "
               "free balance into its margin on perp pair SYMBOL; a negative AMOUNT takes it "
               "out (as much as the engine shard frees: settled money, realized PnL included, "
               "less the initial margin). With the account tier the account's own key or an "
               "admin's; without it an admin's, straight into the margin."),
    "market": ("admin_market", "market", "Markets at runtime (admin key): list each pair's "
               "state, add (list) a new pair, halt, resume, cancel-only, delist, price bands "
               "and maximum order size; journaled, no restart."),
    "mm": ("mm", "mm", "Run a market maker: quote every pair around a reference price with "
           "inventory limits."),
    "move": ("move", "move", "Move PAIR's book to engine shard I, live (an admin key on a "
             "secure cluster)."),
    "orders": ("money", "orders", "List ACCOUNT's open orders and what each holds (an admin "
               "or reader key, or the account's own): symbol, id, side, price, open quantity, "
               "held amount and asset, amends in flight."),
    "placement": ("placement", "placement", "Show the placement map: which engine shard "
                  "owns each pair, the map's version, pinned pairs and any move in progress."),
    "positions": ("positions", "positions", "Show ACCOUNT's perp positions: size, entry and "
                  "mark price, unrealized and realized PnL, collateral, equity, the initial and "
                  "maintenance margin at the mark, and the pair's insurance fund."),
    "redis": ("redis", "redis_cmd", "Run the embedded Redis-compatible server on the "
              "layout's port (base+4)."),
    "reshard": ("reshard", "reshard", "Spread the pairs over N engine shards of a running "
                "cluster, live (an admin key on a secure cluster)."),
    "replay": ("replay", "replay", "Run JSON-lines commands from SOURCE (a file or -) through "
               "one engine; print events."),
    "router": ("router", "router", "Run the router: hash each request's symbol to a shard "
               "and forward it."),
    "status": ("market", "status", "Show every shard's status: seq, resting orders, backlog, "
               "uptime; and every account shard's: seq, accounts, open orders, link gaps, "
               "anomalies, journal."),
    "tail": ("tail", "tail", "Follow SYMBOL's trades live from Redis (shardex:trades:SYMBOL, "
             "XREAD BLOCK)."),
    "ticker": ("candles", "ticker", "Show PAIR's rolling 24 h ticker: last, open, high, low, "
               "volume, change."),
    "up": ("up", "up", "Start a local cluster (router + N shards), print endpoints, run until "
           "Ctrl-C."),
    "withdraw": ("money", "withdraw", "Withdraw AMOUNT of ASSET for ACCOUNT (admin key)."),
}  # fmt: skip


class LazyGroup(click.Group):
    """A group that imports a command's module when the command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:  # noqa: ARG002
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:  # noqa: ARG002
        if cmd_name not in COMMANDS:
            return None
        if cmd_name not in self.commands:
            module, attr, _ = COMMANDS[cmd_name]
            cmd = getattr(importlib.import_module(f"shardex.cli.{module}"), attr)
            document_env(cmd, cmd_name)
            self.commands[cmd_name] = cmd
        return self.commands[cmd_name]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from ``COMMANDS``' summaries (importing no command module)."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = [(n, click.utils.make_default_short_help(COMMANDS[n][2], limit)) for n in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def load_all(self) -> dict[str, click.Command]:
        """Every command, imported (for tests and tools that look at all of them)."""
        for name in COMMANDS:
            self.get_command(click.Context(self), name)
        return self.commands


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shardex")
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    envvar="SHARDEX_LOG_LEVEL",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def main(log_level: str) -> None:
    """shardex: a sharded, multiprocess order-matching cluster.

    Start a local cluster with `shardex up`, look at it with `shardex status` and
    `shardex book SYMBOL`, run the engine on a file with `shardex replay`.
    """
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
    )


document_env(main)


def __getattr__(name: str):
    """Names the one-module ``shardex.cli`` had (``_seq_range``, ``check_endpoint``, ...),
    found in the module that holds them now (imported on first use)."""
    where = _MOVED.get(name)
    if where is None:
        raise AttributeError(f"module 'shardex.cli' has no attribute {name!r}")
    module, attr = where
    return getattr(importlib.import_module(f"shardex.cli.{module}"), attr)


_MOVED = {
    "_seq_range": ("replay", "seq_range"),
    "check_endpoint": ("base", "check_endpoint"),
    "advertised": ("base", "advertised"),
    "UsageLineError": ("base", "UsageLineError"),
    "INSECURE_WARNING": ("base", "INSECURE_WARNING"),
    "keys_dir_of": ("base", "keys_dir_of"),
    "process_keys_dir": ("base", "process_keys_dir"),
    "client_options": ("options", "client_options"),
    "resolve_shards": ("options", "resolve_shards"),
    "resolve_accounts": ("options", "resolve_accounts"),
    "resolve_routers": ("options", "resolve_routers"),
}

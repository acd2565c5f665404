"""``shardex loadgen``: drive a cluster with orders and report throughput and latency (the
load itself lives in ``shardex.tools.loadgen``)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from shardex.cli.connect import find
from shardex.cli.options import (
    client_base_port_option,
    client_host_option,
    endpoint_option,
    key_option,
)
from shardex.endpoints import connection_error, explain
from shardex.tools.latplot import plot
from shardex.tools.loadgen import LoadConfig, LoadError, format_progress, format_report, run
from shardex.tools.workload import DEFAULT_MIX_TEXT


@click.command()
@endpoint_option
@client_host_option
@client_base_port_option
@click.option(
    "--rate",
    type=float,
    default=None,
    help="Open loop: orders/s offered (latency from intended send time).",
)
@click.option(
    "--concurrency",
    type=int,
    default=1,
    show_default=True,
    help="Closed loop: connections (per generator process).",
)
@click.option(
    "--window",
    type=int,
    default=8,
    show_default=True,
    help="Closed loop: frames in flight per connection.",
)
@click.option(
    "--batch",
    type=int,
    default=100,
    show_default=True,
    help="Orders per frame (open loop: at most, of those due).",
)
@click.option(
    "--duration",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds of load (ignored when --orders is given).",
)
@click.option("--orders", type=int, default=None, help="Send exactly this many commands.")
@click.option(
    "--symbols", type=int, default=2, show_default=True, help="Trade the first K built-in markets."
)
@click.option("--accounts", type=int, default=100, show_default=True)
@click.option(
    "--mix",
    default=DEFAULT_MIX_TEXT,
    show_default=True,
    help="Weights of limit/ioc/market/cancel/amend (and stop: stop / take-profit orders).",
)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--direct", is_flag=True, help="Send straight to the shards (skip the router).")
@click.option(
    "--procs",
    type=int,
    default=1,
    show_default=True,
    help="Generator processes (their histograms are merged).",
)
@click.option(
    "--timeout",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds before an unanswered frame counts as timed out.",
)
@click.option(
    "--fate-wait",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds after the load to keep asking (with back-off) the fates of orders whose "
    "outcome stayed open; then they count as unknown, with the reason.",
)
@click.option(
    "--max-error-rate",
    type=float,
    default=0.01,
    show_default=True,
    help="Exit 1 when (timeouts + batch errors) / sent exceeds this.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the JSON report to this file.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also draw the run's latency percentile curve (HDR style: p50..p99.99 on a log "
    "scale) to this SVG file.",
)
@click.option("--quiet", is_flag=True, help="No progress line.")
@click.option(
    "--risk",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="on: orders go through the account shards (@account routing; a default shardex up "
    "runs one); off: straight to the engine shards (only a cluster started with --accounts 0 "
    "takes them); auto: on iff the cluster has account shards.",
)
@click.option(
    "--fund/--no-fund",
    default=True,
    show_default=True,
    help="With risk on: top every account up with admin deposits before sending.",
)
@key_option
def loadgen(**o: Any) -> None:
    """Drive the cluster with orders and report throughput and latency percentiles.

    Orders are for accounts acct-0.. (--accounts): the key must be an admin key (the default:
    DATA_DIR/keys/admin.key) or a trader key holding those accounts.
    """
    found = find(o["endpoint"], o["host"], o["base_port"])
    err = sys.stderr  # (click.get_text_stream is deprecated in click 8.5)

    def progress(p) -> None:
        if not o["quiet"]:
            err.write("\r" + format_progress(p))
            err.flush()

    try:
        rep = run(_config(found.endpoint, o), on_progress=progress)
    except LoadError as exc:
        msg = str(exc)
        raise click.ClickException(explain(msg, found) if connection_error(msg) else msg) from None
    if not o["quiet"]:
        click.echo("", err=True)
    if o["plot"]:
        _plot(rep, o["plot"])
    _report(rep, o["out"], o["as_json"], o["max_error_rate"])


def _plot(rep: Any, path: str) -> None:
    """Write the run's latency curve (``--plot``) before the report decides the exit code."""
    how = f"{rep.config.get('rate'):g}/s offered" if rep.config.get("rate") else "closed loop"
    title = f"shardex loadgen: {rep.acked:,} commands in {rep.seconds:.1f} s ({how})"
    with open(path, "w") as fh:
        fh.write(plot(rep.hist, title))


def _config(endpoint: str, o: dict[str, Any]) -> LoadConfig:
    """The load from the options (``--orders`` makes ``--duration`` moot)."""
    same = ("rate", "concurrency", "window", "batch", "orders", "symbols", "accounts", "mix",
            "seed", "direct", "procs", "timeout", "fate_wait", "risk", "fund")  # fmt: skip
    return LoadConfig(
        endpoint=endpoint,
        duration=None if o["orders"] is not None else o["duration"],
        key=o["key_file"],
        **{name: o[name] for name in same},
    )


def _report(rep: Any, out: str | None, as_json: bool, max_error_rate: float) -> None:
    """Print (and with ``--out`` write) the report; exit 130 when interrupted, 1 past
    ``--max-error-rate``."""
    report = rep.to_dict()
    if out:
        with open(out, "w") as fh:
            json.dump(report, fh, indent=2)
    if as_json:
        click.echo(json.dumps(report))
    else:
        for line in format_report(report):
            click.echo(line)
    if rep.interrupted:
        click.echo(f"interrupted after {report['seconds']:.2f}s: partial report above", err=True)
        sys.exit(130)
    sent = max(1, rep.sent)
    if rep.error_count / sent > max_error_rate:
        click.echo(
            f"error rate {rep.error_count / sent:.2%} > --max-error-rate {max_error_rate:.2%}",
            err=True,
        )
        sys.exit(1)

"""``shardex`` command line: one click group, thin commands that call into the package."""

from __future__ import annotations

import sys
from collections import Counter
from typing import BinaryIO

import click

from shardex.engine import Engine, MarketError, load_markets
from shardex.engine.codes import EV_REJECTED, EV_TRADE
from shardex.protocol import command_from_json_line, event_to_json_line


def _markets(path: str | None):
    try:
        return load_markets(path)
    except MarketError as exc:
        raise click.ClickException(str(exc)) from exc


markets_option = click.option(
    "--markets",
    "markets_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML file defining extra markets ([markets.SYMBOL] tick/lot/max_price/max_qty).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shardex")
def main() -> None:
    """shardex: a sharded, multiprocess order-matching cluster."""


@main.command()
@click.argument("source", type=click.File("rb"), default="-")
@markets_option
@click.option("-o", "--output", type=click.File("w"), default="-", help="Write events here.")
@click.option("--summary", is_flag=True, help="Print counts (commands, trades, rejects) to stderr.")
def replay(source: BinaryIO, markets_file: str | None, output, summary: bool) -> None:
    """Run JSON-lines commands from SOURCE (a file or -) through one engine; print events.

    Deterministic: the same input always gives the same events. A malformed line becomes a
    `rejected` event naming its line number, and replay goes on.
    """
    markets = _markets(markets_file)
    engine = Engine(markets)
    commands = trades = 0
    rejects: Counter[str] = Counter()
    out: list = []
    write = output.write
    for lineno, raw in enumerate(source, 1):
        if not raw.strip():
            continue
        commands += 1
        out.clear()
        engine.apply(command_from_json_line(raw, markets, f"line {lineno}: "), out)
        for ev in out:
            if ev[0] == EV_TRADE:
                trades += 1
            elif ev[0] == EV_REJECTED:
                reason = ev[4].split(": ", 1)[1] if ev[4].startswith("line ") else ev[4]
                rejects[reason] += 1
            write(event_to_json_line(ev, markets))
            write("\n")
    output.flush()
    if summary:
        err = click.get_text_stream("stderr")
        err.write(
            f"commands {commands}  events {engine.seq}  trades {trades}  "
            f"rejects {sum(rejects.values())}\n"
        )
        for reason, n in rejects.most_common():
            err.write(f"  {n:>8}  {reason}\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

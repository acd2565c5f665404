"""``shardex replay`` and ``shardex journal inspect``: the engine and the journals offline
(no cluster needed): run commands or a journal through one engine, or check a journal dir."""

from __future__ import annotations

import json
import sys
from typing import Any, BinaryIO

import click

from shardex.cli.base import fee_schedule
from shardex.cli.base import markets as _markets
from shardex.cli.options import markets_option
from shardex.journal import JournalError
from shardex.tools.journals import inspect_journal
from shardex.tools.replay import json_commands, replay_journal
from shardex.tools.replay import replay as run_replay


@click.command()
@click.argument("source", type=click.File("rb"), default="-")
@markets_option
@click.option("-o", "--output", type=click.File("w"), default="-", help="Write events here.")
@click.option("--summary", is_flag=True, help="Print counts (commands, trades, rejects) to stderr.")
@click.option(
    "--journal",
    "journal_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Replay a shard's journal directory instead of SOURCE (events as JSON lines).",
)
def replay(
    source: BinaryIO, markets_file: str | None, output, summary: bool, journal_dir: str | None
) -> None:
    """Run JSON-lines commands from SOURCE (a file or -) through one engine; print events.

    Deterministic: the same input always gives the same events. A malformed line becomes a
    `rejected` event naming its line number, and replay goes on. With --journal DIR, the
    events of any journal the cluster writes (DATA_DIR/shard-I, with or without the account
    tier, or DATA_DIR/accounts-J), replayed as its shard does, from its first record still on
    disk (or the oldest snapshot the records continue).
    """
    markets = _markets(markets_file)
    try:
        if journal_dir is not None:
            fees = fee_schedule(markets_file, markets)  # (an account shard's [fees])
            result = replay_journal(journal_dir, markets, output.write, fees)
        else:
            result = run_replay(json_commands(source, markets), markets, output.write)
    except JournalError as exc:
        raise click.ClickException(str(exc)) from None
    output.flush()
    if summary:
        click.echo("\n".join(result.lines()), err=True)


@click.group()
def journal() -> None:
    """Look at a shard's journal directory."""


@journal.command("inspect")
@click.argument("directory", type=click.Path(file_okay=False))
@markets_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def journal_inspect(directory: str, markets_file: str | None, as_json: bool) -> None:
    """Records, seq range, snapshots and any damage in DIRECTORY (changes nothing).

    Replays it as its shard would recover it (engine shard, with or without the account tier,
    or account shard). Exit 1, naming each problem, when anything is wrong: damage, records
    recovery would refuse, a damaged snapshot, state that does not add up.
    """
    try:
        table = _markets(markets_file)
        info = inspect_journal(directory, table, fee_schedule(markets_file, table))
    except JournalError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(info))
    else:
        click.echo(
            f"{info['dir']}: {info['kind']}: {info['commands']} commands, {info['records']} "
            f"records in {len(info['segments'])} segment(s), {len(info['snapshots'])} snapshot(s)"
        )
        for seg in info["segments"]:
            torn = f"torn tail: {seg['torn_tail']}" if seg["torn_tail"] else "ok"
            state = seg["damage"] or torn
            click.echo(
                f"  {seg['file']}  {seg['bytes']:>12,} B  {seg['commands']:>10,} commands  "
                f"{seq_range(seg)}  {state}"
            )
        for snap in info["snapshots"]:
            click.echo(
                f"  {snap['file']}  seq {snap['seq']}  "
                f"{'valid' if snap['valid'] else 'DAMAGED'}  orders {snap['orders']}"
            )
        if info["seq"] is not None:
            click.echo(f"  recovery reaches seq {info['seq']}")
    for problem in info["problems"]:
        click.echo(f"PROBLEM: {problem}", err=True)
    if info["problems"]:
        click.echo(f"{directory}: {len(info['problems'])} problem(s) found", err=True)
        sys.exit(1)


def seq_range(seg: dict[str, Any]) -> str:
    """The event seqs a segment's commands produced, when the journal says (first..last event);
    otherwise only what records carry: the seq *before* each record's first command."""
    if seg.get("first_event_seq") is not None:
        return f"events seq {seg['first_event_seq']}..{seg['last_event_seq']}"
    if seg.get("first_seq") is None:
        return "no records"
    return f"records after seq {seg['first_seq']}..{seg['last_seq']}"


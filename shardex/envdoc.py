"""Every environment variable a ``shardex`` command reads, shown in that command's ``--help``.

Options bound to a variable (``envvar=``) get click's ``[env var: NAME]`` next to them; the
variables read elsewhere (the client's key and data dir, the processes' tuning knobs) are listed
in an "Environment" epilog here, so ``--help`` is the whole truth and nothing is folklore.
"""

from __future__ import annotations

import click

# What the client side reads (shardex.wire.transport.default_key_path, shardex.endpoints)
CLIENT = {
    "SHARDEX_KEY": "key file to connect with ('none': no key) [DATA_DIR/keys/admin.key]",
    "SHARDEX_DATA_DIR": "where the admin key and endpoints.json (the ports shardex up "
    "recorded) are found [./data]",
}
# What every long-running process reads (shardex.metrics, shardex.node.runtime)
NODE = {
    "SHARDEX_METRICS_HOST": "address the metrics exporter binds [127.0.0.1]",
    "SHARDEX_GC": "'default' keeps Python's garbage collector settings (else: frozen, off)",
}
ENGINE = {
    "SHARDEX_ENGINE": "auto | interpreted | compiled (the engine's mypyc build) "
    "[auto]",
    "SHARDEX_ENGINE_CACHE": "where the compiled build is kept [~/.cache/shardex/engine]",
}
BUILD = {"SHARDEX_ENGINE_BUILD": "'off': no compiled build when there is none [auto]"}
SHARD = {
    **ENGINE,
    "SHARDEX_JOURNAL_WRITER": "'1' commits the journal in a writer thread [off]",
}
RINGS = {
    "SHARDEX_LINK_RING": "messages kept per link for re-sending [100000]",
    "SHARDEX_EVENT_RING": "account events kept for the bridge's repairs [200000]",
}
# What every engine and account shard reads (shardex.recovery); `shardex engine` also has flags
SNAPSHOTS = {
    "SHARDEX_SNAPSHOT_EVERY": "journaled commands between snapshots [100000]",
    "SHARDEX_SNAPSHOT_INTERVAL": "seconds between snapshots when something changed [60]",
}
HONCHO = {"HONCHO_PROCESS_NAME": "under honcho: this process's index (NAME.K)"}

EXTRA: dict[str, dict[str, str]] = {
    # up: what its children read (they inherit the environment)
    "up": {**NODE, **SHARD, **BUILD, **RINGS, **SNAPSHOTS},
    "router": {**NODE, **HONCHO},
    "engine": {**NODE, **SHARD, **HONCHO},
    "accounts": {**NODE, **ENGINE, **RINGS, **SNAPSHOTS, **HONCHO},
    "bridge": {**NODE},
    "replay": ENGINE,
    "mm": {**CLIENT, "SHARDEX_METRICS_HOST": NODE["SHARDEX_METRICS_HOST"]},
}
# every command that connects as a client (any command not listed above that takes --key)


def _epilog(extra: dict[str, str]) -> str:
    lines = [f"  {name}: {text}" for name, text in extra.items()]
    return "\b\nEnvironment (besides the [env var] of each option):\n" + "\n".join(lines)


def document_env(cmd: click.Command, name: str | None = None) -> None:
    """Show each option's variable in its help and add the other variables a command reads
    as an epilog; a group: its own options and every command it has loaded (subgroups
    included). ``name``: the command's name under its group (``EXTRA``'s key)."""
    for param in cmd.params:
        if getattr(param, "envvar", None):
            param.show_envvar = True  # type: ignore[attr-defined]
    if isinstance(cmd, click.Group):
        for sub_name, sub in cmd.commands.items():
            document_env(sub, sub_name)
        return
    extra = EXTRA.get(name or cmd.name or "")
    if extra is None and any(p.name == "key_file" for p in cmd.params):
        extra = CLIENT
    if extra:
        cmd.epilog = (cmd.epilog + "\n\n" if cmd.epilog else "") + _epilog(extra)

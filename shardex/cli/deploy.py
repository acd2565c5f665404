"""``shardex deploy``: what a cluster beyond one box needs, generated (docs/deploy.md):
``k8s`` writes Kubernetes manifests from the process descriptions, ``keys`` makes the folder
the keys Secret is created from."""

from __future__ import annotations

from pathlib import Path

import click

from shardex.cli.options import layout_options
from shardex.config import load_markets
from shardex.deploy.k8s import SECRET, Spec
from shardex.deploy.keys import secret_dir
from shardex.deploy.render import render, write
from shardex.engine.markets import MarketError


@click.group()
def deploy() -> None:
    """Deploy a cluster beyond one box: Kubernetes manifests and the keys they mount."""


@deploy.command("k8s")
@layout_options(
    {"replicas": 2, "routers": 2},
    shards="Engine shards N (a StatefulSet each).",
    accounts="Account shards M (a StatefulSet each; 0: the account tier is off).",
    replicas="Pods per engine and account shard: 2 = a leader and a hot standby under "
    "the lease, never on the same node.",
    routers="Routers R (a Deployment of one pod each, spread over nodes where possible; "
    "every shard serves all).",
    gateways="Gateway pods G (one Deployment behind one Service).",
)
@click.option(
    "--image",
    default=Spec().image,
    show_default=True,
    help="The container image (built from the Dockerfile).",
)
@click.option(
    "--storage",
    default=Spec().storage,
    show_default=True,
    help="Size of each journal's volume claim.",
)
@click.option(
    "--coord",
    type=click.Choice(["etcd", "redis"]),
    default=Spec().coord,
    show_default=True,
    help="Where the replicas' leases live: a 3-member etcd StatefulSet (one node may be "
    "lost), or the one Redis pod (its node lost: every leader fenced).",
)
@click.option(
    "--etcd-image",
    default=Spec().etcd_image,
    show_default=True,
    help="The etcd members' image (with --coord etcd).",
)
@click.option(
    "--markets",
    "markets_file",
    type=click.Path(dir_okay=False, exists=True),
    help="A markets file for the ConfigMap [the built-in markets].",
)
@click.option(
    "--history",
    is_flag=True,
    help="Add the history writer (with the account tier), writing to PostgreSQL at the URL "
    "in the Secret shardex-history-db (key url).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Write one YAML file per component into this folder [stdout].",
)
def k8s(shards: int, accounts: int, replicas: int, routers: int, gateways: int, image: str,
        storage: str, coord: str, etcd_image: str, markets_file: str | None, history: bool,
        out: str | None) -> None:  # fmt: skip
    """Write Kubernetes manifests for a cluster: a StatefulSet per engine and account shard
    (both replicas as pods, anti-affine), headless Services, journal volume claims, a
    3-member etcd for the leases (--coord etcd), routers,
    bridge, gateways and the candles worker as Deployments (the price feed when the markets
    file has a perp market, the history writer with --history), the markets ConfigMap,
    disruption budgets, NetworkPolicies, probes on /healthz and Prometheus scrape annotations.
    The keys Secret they mount is made by `shardex deploy keys` (never written here)."""
    text = ""
    if markets_file:
        try:
            load_markets(markets_file)
        except MarketError as exc:
            raise click.UsageError(str(exc)) from None
        text = Path(markets_file).read_text()
    if history and not accounts:
        raise click.UsageError("--history needs the account tier (--accounts 1 or more)")
    spec = Spec(shards, accounts, replicas, routers, gateways, image, text, storage, history,
                coord=coord, etcd_image=etcd_image)  # fmt: skip
    files = render(spec, markets_file)
    if out is None:
        click.echo("".join(files.values()), nl=False)
        return
    for path in write(out, files):
        click.echo(f"wrote {path}")


@deploy.command("keys")
@layout_options(
    shards="Engine shards N (one process key each).",
    accounts="Account shards M (one process key each).",
)
@click.option(
    "--keys-dir",
    type=click.Path(file_okay=False),
    required=True,
    help="The operator's key store (created if missing; keeps the admin key).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="The folder to make the Secret from (no admin key in it).",
)
def keys(shards: int, accounts: int, keys_dir: str, out: str) -> None:
    """Issue every process key a cluster of N engine and M account shards uses, and copy what
    the pods need (never the admin key) into OUT, for
    `kubectl create secret generic shardex-keys --from-file=OUT`."""
    names = secret_dir(keys_dir, out, shards, accounts)
    click.echo(f"{len(names)} files in {out}; now: kubectl create secret generic {SECRET} "
               f"--from-file={out}")  # fmt: skip

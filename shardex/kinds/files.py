"""Files generated from the process descriptions: the Procfile, .env and prometheus.yml.

``python -m shardex.kinds.files`` rewrites the checked-in Procfile and .env; a test checks
they equal what is generated here, so the descriptions stay the one source.
"""

from __future__ import annotations

import sys
from pathlib import Path

from shardex.kinds import KINDS
from shardex.layout import Layout

PROCFILE_HEADER = """\
# Generated from shardex/kinds (python -m shardex.kinds.files): the same processes as `shardex up`.
# Shard count: SHARDEX_SHARDS in .env ("auto" = the engine concurrency honcho was started with,
# so `honcho start -c engine=4` just works); routers the same way with SHARDEX_ROUTERS=auto
# (`honcho start -c engine=4,router=2`: every engine serves both routers; give clients both
# router endpoints, comma-separated).
# Identity: every process uses $SHARDEX_DATA_DIR/keys (the first to start creates the cluster's
# keys, under a lock); SHARDEX_INSECURE=1 in .env turns authentication off (a lab only).
# Accounts: SHARDEX_ACCOUNTS=auto follows honcho's concurrency, so a plain `honcho start` runs
# one account shard (as `shardex up` does) and `honcho start -c engine=2,accounts=2` runs two
# (the router, engines and bridge all see M); `-c accounts=0` turns the tier off (orders
# unfunded) and does not start the process.
# Market maker: off as in `shardex up` (the `mm` process only waits); SHARDEX_MM=on in .env
# makes it quote every pair with money it deposits itself (docs/marketmaker.md).
"""
# what every process of the Procfile reads besides its kind's lines
COMMON_ENV = (("SHARDEX_DATA_DIR", "data"),)


def procfile() -> str:
    """The Procfile: one line per kind that has one, in start order."""
    lines = [f"{k.name}: {k.procfile}" for k in KINDS if k.procfile]
    return PROCFILE_HEADER + "\n".join(lines) + "\n"


def dotenv() -> str:
    """The .env honcho reads: each variable once, the kinds' first, then the common ones."""
    seen: dict[str, str] = {}
    for kind in KINDS:
        for name, value in kind.env:
            seen.setdefault(name, value)
    for name, value in COMMON_ENV:
        seen.setdefault(name, value)
    return "".join(f"{name}={value}\n" for name, value in seen.items())


def prometheus_config(
    layout: Layout, *, interval: str = "5s", replicas: int = 1, optional: tuple[str, ...] = ()
) -> str:
    """A prometheus.yml scraping every exporter of a ``shardex up`` layout: one job per kind
    with a metrics port (``replicas`` 2: both replicas of every engine and account shard;
    only the leader exports a shard's metrics; a standby's port answers its ``/healthz``
    and its process's own series until it leads). A kind with no process in the layout (no
    account shard) gets no job, nor does an optional kind (the market maker) unless named in
    ``optional``."""
    out = [
        "# Scrapes every exporter of `shardex up` (see `shardex up --prometheus-config`).",
        "global:",
        f"  scrape_interval: {interval}",
        f"  evaluation_interval: {interval}",
        "scrape_configs:",
    ]
    for kind in KINDS:
        if kind.optional and kind.name not in optional:
            continue
        ports = kind.scrape(layout, replicas) if kind.scrape else []
        if ports:
            targets = ", ".join(f"'{layout.host}:{p}'" for p in ports)
            out += [f"  - job_name: shardex-{kind.name}", "    static_configs:",
                    f"      - targets: [{targets}]"]  # fmt: skip
    return "\n".join(out) + "\n"


def write(root: Path) -> None:
    """Rewrite ``root``/Procfile and ``root``/.env from the descriptions."""
    (root / "Procfile").write_text(procfile())
    (root / ".env").write_text(dotenv())


if __name__ == "__main__":  # pragma: no cover - a maintainer's tool
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "."))

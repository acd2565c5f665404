"""``shardex up --prometheus-config FILE [--prometheus-reload URL]``: the scrape config of the
cluster ``up`` runs, written at start and again whenever ``shardex reshard`` changes the engine
shard processes, and the Prometheus that reads it told to read it again.

Why ``POST URL/-/reload`` and not SIGHUP: ``shardex up`` does not start Prometheus (a venue runs
its own, often on another host, under its own user), so there is no process of ours to signal;
the HTTP endpoint reaches it wherever it runs. Prometheus serves it only when started with
``--web.enable-lifecycle``; without ``--prometheus-reload`` nothing is sent and the file is
still rewritten (``kill -HUP`` of Prometheus, or its own restart, picks it up). A reload that
fails is said (a warning) and changes nothing else: the cluster is not held up by its
monitoring.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from shardex.kinds import Plan
from shardex.kinds.feed import has_perps
from shardex.kinds.files import prometheus_config as render
from shardex.layout import Layout

RELOAD_TIMEOUT_S = 5.0  # Prometheus answers /-/reload once it has applied the new config


class ReloadURLError(ValueError):
    """``--prometheus-reload`` is not an http(s) URL of a Prometheus."""


def reload_url(base: str) -> str:
    """The ``/-/reload`` endpoint of the Prometheus at ``base`` (``http://host:9090``, with or
    without a path prefix; given already ending in ``/-/reload`` it is kept)."""
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ReloadURLError(f"{base!r}: give Prometheus's http(s) URL, e.g. "
                             "http://127.0.0.1:9090")  # fmt: skip
    url = base.rstrip("/")
    return url if url.endswith("/-/reload") else url + "/-/reload"


def reload(url: str, timeout: float = RELOAD_TIMEOUT_S) -> str | None:
    """POST ``url`` (``reload_url``'s); None when Prometheus took the config, else why not."""
    req = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        hint = " (start Prometheus with --web.enable-lifecycle)" if exc.code == 403 else ""
        body = exc.read().decode("utf-8", "replace").strip()[:200]
        return f"{url}: HTTP {exc.code} {body}{hint}"
    except (OSError, ValueError) as exc:
        return f"{url}: {exc}"
    return None


@dataclass
class PrometheusConfig:
    """The config file of one ``shardex up``: ``write(layout)`` rewrites it (atomically: a
    Prometheus reloading meanwhile never reads half a file) and, with ``reload_to``, tells
    Prometheus; ``say`` hears each outcome (a warning starts with "WARNING")."""

    path: str
    replicas: int = 1
    optional: tuple[str, ...] = ()
    reload_to: str | None = None
    say: Callable[[str], None] = print

    def write(self, layout: Layout) -> None:
        """The config for ``layout`` at ``path`` (``OSError`` when it cannot be written)."""
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(render(layout, replicas=self.replicas, optional=self.optional))
        os.replace(tmp, self.path)

    def rewrite(self, layout: Layout) -> None:
        """``write`` then reload, each failure a warning (called from the supervisor's loop
        when a reshard changed the shard processes)."""
        try:
            self.write(layout)
        except OSError as exc:
            self.say(f"WARNING: cannot rewrite the Prometheus config for {layout.shards} "
                     f"shards: {exc}")  # fmt: skip
            return
        if self.reload_to is None:
            return
        why = reload(self.reload_to)
        if why is None:
            self.say(f"Prometheus reloaded {self.path} ({layout.shards} engine shard(s))")
        else:
            self.say(f"WARNING: Prometheus did not reload {self.path}: {why}")


def for_plan(plan: Plan, path: str | None, reload_base: str | None,
             say: Callable[[str], None]) -> PrometheusConfig | None:  # fmt: skip
    """The config of ``plan``'s cluster (None without ``--prometheus-config``), written now.
    ``ReloadURLError`` for a bad ``reload_base``; ``OSError`` when the file cannot be written."""
    if not path:
        if reload_base:
            raise ReloadURLError("--prometheus-reload tells Prometheus to read the file "
                                 "--prometheus-config writes: give both")  # fmt: skip
        return None
    asked = (("mm",) if plan.mm else ()) + (("feed",) if has_perps(plan) else ())
    url = reload_url(reload_base) if reload_base else None
    cfg = PrometheusConfig(path, plan.replicas, asked, url, say)
    cfg.write(plan.layout)
    return cfg

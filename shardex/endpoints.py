"""Where a local cluster listens: ``shardex up`` records its endpoints in DATA_DIR/endpoints.json,
and every command and the SDK look there before falling back to the default layout (port 5555).

Without this each tool guessed 5555 on its own, so a cluster started with ``--base-port`` was
unreachable by every other command unless the port was typed again, and the error said nothing
about the port. The lookup order, the same everywhere (CLI and ``Client()``):

1. an explicit endpoint (``--endpoint`` / ``$SHARDEX_ENDPOINT`` / ``Client("tcp://...")``);
2. an explicit ``--host`` / ``--base-port`` (or ``$SHARDEX_HOST`` / ``$SHARDEX_BASE_PORT``):
   the default layout at that host and base port;
3. DATA_DIR/endpoints.json, DATA_DIR being ``--data-dir`` where a command has it, else
   ``$SHARDEX_DATA_DIR``, else ``./data`` (where ``shardex up`` puts it by default);
4. the default layout: ``tcp://127.0.0.1:5555``.

The file is written atomically (temporary file, fsync, rename) when ``up`` starts and marked
``"state": "stopped"`` on a clean stop rather than removed: the next ``up`` usually reuses the
same ports, and a command run in between can then say "the cluster recorded there is stopped"
instead of guessing 5555. A ``shardex up`` killed without a clean stop leaves ``"running"``
with its pid; readers check that pid (on the same host) to say so.

``Found.source`` says where an endpoint came from; errors quote it, since a wrong port (another
cluster answering, or nothing at all) is the usual cause of a refused or silent connection.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shardex.layout import DEFAULT_BASE_PORT, Layout

ENDPOINTS_FILE = "endpoints.json"
DATA_DIR_ENV = "SHARDEX_DATA_DIR"
DEFAULT_DATA_DIR = "data"
DEFAULT_HOST = "127.0.0.1"
FORMAT = 1


class EndpointsFileError(ValueError):
    """DATA_DIR/endpoints.json exists but cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class Found:
    """An endpoint a client will use and where it came from (quoted in connection errors)."""

    endpoint: str
    source: str  # e.g. "--endpoint", "data/endpoints.json", "the default layout"
    stale: str | None = None  # why the recorded cluster may not be running (None: no reason)

    def describe(self) -> str:
        """``from data/endpoints.json; its shardex up (pid 7) is not running`` and the like."""
        return f"from {self.source}" + (f"; {self.stale}" if self.stale else "")


def data_dir_of(data_dir: str | os.PathLike | None = None) -> Path:
    """The data dir a client looks in: the one given, else ``$SHARDEX_DATA_DIR``, else ./data."""
    return Path(data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def record(
    layout: Layout,
    *,
    replicas: int = 1,
    redis_url: str | None = None,
    keys_dir: str | None = None,
    pid: int | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """What ``up`` writes: every endpoint of ``layout`` (pure: ``pid``/``now`` are given)."""
    shards = []
    for i in range(layout.shards):
        s: dict[str, Any] = {
            "direct": layout.direct(i),
            "pub": layout.pub(i),
            "metrics": layout.shard_metrics_port(i),
        }
        if replicas > 1:
            s["replica1"] = {"direct": layout.replica_direct(i, 1), "pub": layout.replica_pub(i, 1),
                             "metrics": layout.replica_metrics(i, 1)}  # fmt: skip
        shards.append(s)
    accounts = [
        {"direct": layout.account_direct(j), "pub": layout.account_pub(j),
         "metrics": layout.account_metrics_port(j)}  # fmt: skip
        for j in range(layout.accounts)
    ]
    return {
        "format": FORMAT,
        "state": "running",
        "pid": pid,
        "hostname": socket.gethostname(),
        "started_at": now,
        "host": layout.host,
        "base_port": layout.base_port,
        "replicas": replicas,
        "router": layout.frontends,
        "router_shards": layout.backends,
        "router_metrics": [layout.router_metrics(j) for j in range(layout.routers)],
        "shards": shards,
        "accounts": accounts,
        "redis": _safe_url(redis_url),
        "bridge_metrics": layout.bridge_metrics_port if redis_url else None,
        "keys_dir": keys_dir,
    }


def _safe_url(url: str | None) -> str | None:
    """A Redis URL without its password (the file is not a secret store; ``tail`` reads the
    reader's password from the key store as before)."""
    if url is None:
        return None
    try:
        if urlsplit(url).password is not None or "password=" in url:
            return None
    except ValueError:
        return None
    return url


def write(data_dir: str | os.PathLike, rec: dict[str, Any]) -> Path:
    """Write ``rec`` to DATA_DIR/endpoints.json atomically: a reader sees the old file or the
    new one, never a torn one (temporary file, fsync, rename, fsync of the directory)."""
    root = Path(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = root / ENDPOINTS_FILE
    tmp = root / f".{ENDPOINTS_FILE}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(rec, fh, indent=1, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass  # a directory fsync is not supported everywhere; the rename is still atomic
    return path


def read(data_dir: str | os.PathLike) -> dict[str, Any] | None:
    """DATA_DIR/endpoints.json, or None when there is none; ``EndpointsFileError`` when it is
    unreadable or not a record of ours (never a silent fall back to a guessed port)."""
    path = Path(data_dir) / ENDPOINTS_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise EndpointsFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        rec = json.loads(text)
    except ValueError as exc:
        raise EndpointsFileError(f"{path} is not valid JSON ({exc}): delete it or give "
                                 "--endpoint") from None  # fmt: skip
    if not isinstance(rec, dict) or rec.get("format") != FORMAT or not isinstance(
        rec.get("router"), str
    ):
        raise EndpointsFileError(f"{path} is not a shardex endpoints file (format {FORMAT})")
    return rec


def mark_stopped(data_dir: str | os.PathLike, pid: int, now: float | None = None) -> None:
    """On a clean stop: mark the file stopped, if it is still the one this ``up`` (``pid``)
    wrote (another ``up`` on the same data dir may have replaced it since)."""
    try:
        rec = read(data_dir)
    except EndpointsFileError:
        return
    if rec is None or rec.get("pid") != pid:
        return
    rec["state"] = "stopped"
    rec["stopped_at"] = time.time() if now is None else now
    write(data_dir, rec)


def staleness(rec: dict[str, Any], pid_alive=None) -> str | None:
    """Why the cluster a record names is probably not running, or None."""
    if rec.get("state") == "stopped":
        when = rec.get("stopped_at")
        at = time.strftime(" at %Y-%m-%d %H:%M:%S UTC", time.gmtime(when)) if when else ""
        return f"that cluster was stopped{at}"
    pid = rec.get("pid")
    if isinstance(pid, int) and rec.get("hostname") == socket.gethostname():
        if not (pid_alive or _pid_alive)(pid):
            return f"its shardex up (pid {pid}) is not running"
    return None


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie (killed, not yet reaped by its parent) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # (no /proc: the signal's answer is all there is)
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _runs_shardex(pid: int) -> bool:
    """Whether ``pid``'s command line names shardex (a pid reused by another program after a
    kill -9 is not a cluster); True when it cannot be read."""
    try:
        return b"shardex" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def in_use(data_dir: str | os.PathLike, pid_alive=None, runs_shardex=None) -> str | None:
    """Why ``shardex up`` must not start on ``data_dir``: its endpoints file says a ``shardex
    up`` on this host that is still running wrote it (two clusters on one data dir would both
    write every journal), or None. An unreadable file, a stopped or dead writer: None."""
    try:
        rec = read(data_dir)
    except EndpointsFileError:
        return None
    if rec is None or rec.get("state") != "running" or rec.get("hostname") != socket.gethostname():
        return None
    pid = rec.get("pid")
    if type(pid) is not int or pid == os.getpid():
        return None
    if not (pid_alive or _pid_alive)(pid) or not (runs_shardex or _runs_shardex)(pid):
        return None
    return (
        f"data dir {data_dir} is in use: shardex up (pid {pid}) runs a cluster on it (router "
        f"{rec.get('router')}); two clusters on one data dir would both write its journals. "
        f"Stop that one first (kill -INT {pid}), or use another --data-dir"
    )


def find_router(
    endpoint: str | None = None,
    host: str | None = None,
    base_port: int | None = None,
    data_dir: str | os.PathLike | None = None,
) -> Found:
    """The router client endpoint(s) to connect to, by the lookup order of this module."""
    if endpoint:
        return Found(endpoint, "--endpoint / $SHARDEX_ENDPOINT")
    if host is not None or base_port is not None:
        layout = Layout(host or DEFAULT_HOST, DEFAULT_BASE_PORT if base_port is None else base_port)
        return Found(layout.frontend, "--host/--base-port ($SHARDEX_HOST/$SHARDEX_BASE_PORT)")
    root = data_dir_of(data_dir)
    rec = read(root)
    if rec is not None:
        return Found(rec["router"], str(root / ENDPOINTS_FILE), staleness(rec))
    return Found(
        Layout().frontend, f"the default layout (no {root / ENDPOINTS_FILE}: no shardex up there)"
    )


def find_redis(
    host: str | None = None,
    base_port: int | None = None,
    data_dir: str | os.PathLike | None = None,
) -> Found:
    """The cluster's Redis (the embedded one, or the ``--redis-url`` ``up`` was given when it
    has no password), by the same order (``--redis-url`` itself is handled by the caller)."""
    if host is not None or base_port is not None:
        layout = Layout(host or DEFAULT_HOST, DEFAULT_BASE_PORT if base_port is None else base_port)
        return Found(layout.redis_url, "--host/--base-port ($SHARDEX_HOST/$SHARDEX_BASE_PORT)")
    root = data_dir_of(data_dir)
    rec = read(root)
    if rec is not None and rec.get("redis"):
        return Found(rec["redis"], str(root / ENDPOINTS_FILE), staleness(rec))
    if rec is not None:
        host, port = rec.get("host", DEFAULT_HOST), rec.get("base_port", DEFAULT_BASE_PORT)
        return Found(Layout(host, port).redis_url, str(root / ENDPOINTS_FILE), staleness(rec))
    return Found(Layout().redis_url, f"the default layout (no {root / ENDPOINTS_FILE})")


def listening(endpoint: str, timeout: float = 0.3) -> bool | None:
    """Whether anything accepts TCP connections at a ``tcp://HOST:PORT`` endpoint (the first
    of a list): False is "nothing listens there" (refused or no answer), None: cannot tell
    (not tcp://, or a host name that does not resolve)."""
    ep = endpoint.split(",")[0]
    if not ep.startswith("tcp://"):
        return None
    host, _, port = ep[len("tcp://"):].rpartition(":")
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (ConnectionRefusedError, TimeoutError):
        return False
    except (OSError, ValueError):
        return None


# What a client adds to a timeout when it used a key: the key is one suspect among others
NO_REPLY_SUSPECTS = " (no reply: wrong or revoked key, or cluster down)"


def explain(error: str, found: Found) -> str:
    """A connection error made actionable: the endpoint tried, where it came from, and the
    likely cause (nothing listening there, or something that refused this client's key)."""
    if "handshake failed" in error or "authentication failed" in error:
        cause = (
            f"something answers at {found.endpoint} but refused this client: another cluster "
            "at that port (the wrong port?) or the wrong key"
        )
    elif listening(found.endpoint) is False:
        cause = f"nothing is listening at {found.endpoint}: no cluster runs there"
        error = error.replace(NO_REPLY_SUSPECTS, "")  # not the key: nothing answered at all
    else:
        cause = None
    hint = (
        "shardex up records its endpoints in DATA_DIR/endpoints.json (DATA_DIR: "
        "$SHARDEX_DATA_DIR or ./data); --endpoint or --base-port choose another"
    )
    parts = [error, f"endpoint {found.endpoint} ({found.describe()})"]
    if cause:
        parts.append(cause)
    return "; ".join(parts) + f". {hint}"


def connection_error(message: str) -> bool:
    """Whether a client error is about reaching the cluster at all (worth ``explain``), not
    about a request it answered."""
    return message.startswith(("cannot reach", "timeout after", "no reply")) or any(
        s in message for s in ("handshake failed", "authentication failed", "no reply from")
    )

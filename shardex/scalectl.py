"""The control channel between ``shardex reshard`` and the ``shardex up`` supervisor: two small
JSON files in the cluster's data dir.

``DATA_DIR/scale-request.json`` (written by ``reshard``)
    ``{"format": 1, "id": "<hex>", "op": "shards", "shards": N}``: run engine shard processes
    0..N-1 (start the missing ones, stop those above), or ``{"format": 1, "id": ..., "op":
    "restart", "name": "bridge"}``: restart one child (the bridge reads the router's topology
    once, at its start). ``parse_request`` checks it (pure): ``ControlError`` with a stable
    ``code`` for anything else.
``DATA_DIR/scale-state.json`` (written by the supervisor)
    ``{"format": 1, "id", "state": "done"|"failed", "shards", "code", "message"}``: the answer
    to the request with that ``id``; ``reshard`` waits for it with a deadline.

Why files in the data dir and not a socket: the data dir already is the cluster's trust
boundary (its journals, its key store with ``admin.key``): whoever may write there controls the
cluster anyway, so the supervisor needs no key of its own and opens no port. It acts only on a
request file owned by its own user and writable by nobody else (``trusted``), written
atomically (a reader never sees half a request). An ``id`` it has answered is not acted on
again, so a request left in place after a supervisor restart is not replayed blindly: the
answer file names the id it answered; a request a killed supervisor left unanswered is
answered ``failed`` with code ``stale`` by the next one, never carried out.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = 1
REQUEST_FILE = "scale-request.json"
STATE_FILE = "scale-state.json"
OPS = ("shards", "restart")
RESTARTABLE = ("bridge",)  # children a request may restart (reading the topology at start)
MAX_REQUEST_BYTES = 4096
MAX_ID_LEN = 64


class ControlError(Exception):
    """A request the supervisor refuses: ``code`` is stable (tests and scripts match it)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Request:
    """One parsed request: ``op`` "shards" with ``shards``, or "restart" with ``name``."""

    id: str
    op: str
    shards: int = 0
    name: str = ""


def parse_request(text: str | bytes, max_shards: int) -> Request:
    """The request in ``text``; ``ControlError("bad_request", ...)`` for anything malformed."""
    if len(text) > MAX_REQUEST_BYTES:
        raise ControlError("bad_request", f"request larger than {MAX_REQUEST_BYTES} bytes")
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ControlError("bad_request", f"request is not JSON: {exc}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ControlError("bad_request", f"request is not a scale request of format {FORMAT}")
    rid, op = obj.get("id"), obj.get("op")
    if type(rid) is not str or not 0 < len(rid) <= MAX_ID_LEN or not rid.isalnum():
        raise ControlError("bad_request", "request id must be 1..64 letters or digits")
    if op == "shards":
        n = obj.get("shards")
        if type(n) is not int or not 1 <= n <= max_shards:
            raise ControlError("bad_request", f"shards must be an integer 1..{max_shards}")
        return Request(rid, op, shards=n)
    if op == "restart":
        name = obj.get("name")
        if name not in RESTARTABLE:
            raise ControlError("bad_request", f"restart: name must be one of {RESTARTABLE}")
        return Request(rid, op, name=name)
    raise ControlError("bad_request", f"op must be one of {OPS}")


def answer(
    rid: str, state: str, shards: int, code: str = "", message: str = ""
) -> dict[str, Any]:  # fmt: skip
    """The state file's content for request ``rid`` (pure)."""
    return {"format": FORMAT, "id": rid, "state": state, "shards": shards, "code": code,
            "message": message}  # fmt: skip


def trusted(path: Path, st: os.stat_result | None = None) -> bool:
    """Whether the supervisor may act on ``path``: a regular file of its own user that no
    group or other user may write (see the module docstring)."""
    st = st if st is not None else os.stat(path)
    return (stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid()
            and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))  # fmt: skip


def write(path: Path, obj: dict[str, Any]) -> None:
    """``obj`` as JSON at ``path``, atomically (temporary file, rename), mode 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def read_state(data_dir: str | Path) -> dict[str, Any] | None:
    """The supervisor's last answer, or None (none yet, or unreadable mid-write)."""
    try:
        obj = json.loads((Path(data_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None

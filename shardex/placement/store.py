"""Where the placement map is kept: Redis next to the leases, or the data dir without Redis.

Both stores offer the same two calls:

``load() -> PlacementMap | None``
    The stored map, None when none was stored yet (the cluster then uses ``initial(N)`` or a
    map rebuilt from the journals, ``shardex.placement.rebuild``).
``compare_and_set(old_version, new) -> bool``
    Store ``new`` only if the stored map's version is ``old_version`` (None: nothing stored
    yet) and ``new.version`` is greater; False (nothing written) otherwise. Two writers that
    raced from the same base cannot both win, so a map never goes back or forks.

``RedisStore``: key ``shardex:placement`` (JSON), written by a Lua script that compares the
stored version first (Redis runs a script atomically). ``DirStore``: ``DATA_DIR/placement.json``
written to a temporary file, fsynced, renamed over the old one and the directory fsynced, under
an exclusive ``flock`` of ``DATA_DIR/.placement.lock`` so that the compare and the rename are
one step for every process of the host. A torn or foreign file is an error (``StoreError``),
never silently a default map: routing by a wrong map misplaces books.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any, Protocol

from shardex.placement.core import PlacementMap

REDIS_KEY = "shardex:placement"
FILE_NAME = "placement.json"
LOCK_NAME = ".placement.lock"

_CAS = """
local cur = redis.call('GET', KEYS[1])
local v = -1
if cur then v = tonumber(cjson.decode(cur)['version']) end
if v ~= tonumber(ARGV[1]) then return {0, v} end
redis.call('SET', KEYS[1], ARGV[2])
return {1, v}
"""


class StoreError(Exception):
    """The stored map cannot be read (torn, foreign or malformed): the message says where."""


class Store(Protocol):
    """What every placement store offers."""

    def load(self) -> PlacementMap | None: ...

    def compare_and_set(self, old_version: int | None, new: PlacementMap) -> bool: ...


def decode_map(raw: str | bytes, where: str) -> PlacementMap:
    try:
        return PlacementMap.from_wire(json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise StoreError(f"{where}: not a placement map ({exc})") from None


def encode_map(new: PlacementMap) -> str:
    return json.dumps(new.to_wire(), sort_keys=True)


def check_step(old_version: int | None, new: PlacementMap) -> None:
    if old_version is not None and new.version <= old_version:
        raise ValueError(f"placement: version {new.version} does not follow {old_version}")


class RedisStore:
    """The map in Redis (``REDIS_KEY``), next to the leases of replicated shards."""

    def __init__(self, r: Any, key: str = REDIS_KEY) -> None:
        """``r``: a redis-py client (``shardex.lease.connect``)."""
        self.r = r
        self.key = key
        self._cas = r.register_script(_CAS)

    def load(self) -> PlacementMap | None:
        raw = self.r.get(self.key)
        return None if raw is None else decode_map(raw, f"redis key {self.key}")

    def compare_and_set(self, old_version: int | None, new: PlacementMap) -> bool:
        check_step(old_version, new)
        base = -1 if old_version is None else old_version
        ok, _ = self._cas(keys=[self.key], args=[base, encode_map(new)])
        return bool(ok)


class DirStore:
    """The map in ``DATA_DIR/placement.json`` (a cluster without Redis)."""

    def __init__(self, data_dir: str | Path) -> None:
        self.root = Path(data_dir)
        self.path = self.root / FILE_NAME

    def load(self) -> PlacementMap | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{self.path}: unreadable ({exc})") from None
        return decode_map(raw, str(self.path))

    def compare_and_set(self, old_version: int | None, new: PlacementMap) -> bool:
        check_step(old_version, new)
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_NAME, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            cur = self.load()
            if (None if cur is None else cur.version) != old_version:
                return False
            self._write(encode_map(new).encode() + b"\n")
        return True

    def _write(self, body: bytes) -> None:
        """Atomic replace: temporary file, fsync, rename, fsync of the directory."""
        tmp = self.root / f".{FILE_NAME}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

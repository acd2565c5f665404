"""Redis ACL users of a cluster: generated passwords, the embedded server's ACL, and URLs.

Why this shape (docs/redis.md says it for operators):

* **Five users, least privilege per command and key, no default user.** Each command a user
  holds is allowed on the keys it is for only (ACL selectors, Redis/Valkey >= 7.0):
  ``bridge`` XADDs the ``shardex:events|trades|balances|orders`` streams, reads them, and GETs/SETs
  only the epoch fences ``…:epoch``; ``reader`` (``shardex tail``, dashboards) only reads the
  streams; ``consumer`` reads and does consumer-group work (XREADGROUP, XACK, XCLAIM…);
  ``lease`` (the engines of replicated shards) runs the lease commands, each on its own lease
  key; ``candles`` (the candles worker) reads the trades streams and writes ``shardex:candles:*``,
  which ``reader`` may read too. Nothing can DEL, XTRIM, XDEL, XSETID, RENAME, EXPIRE or SET
  a stream. The ``default`` user is off, so a connection without credentials can do nothing
  (``NOAUTH``).
* **What an ACL cannot do.** Redis checks every command a script runs against the calling
  user, so a script cannot lend its caller a command (a user allowed only EVALSHA/FCALL cannot
  have the script XADD), and ACLs never look at arguments: the bridge user can still XADD with
  ``MAXLEN``/``MINID`` (trim a stream) and SET an epoch fence (stop the bridge's writes).
  Guard its password like the CURVE keys.
* **Passwords live in one file**, ``KEYS_DIR/redis.json`` (mode 0600, next to the CURVE keys),
  created on first use by ``RedisUsers.ensure`` (idempotent and safe to race: a lock file, like
  ``KeyStore.init``). The server is given only SHA-256 hashes (``#<hex>`` ACL rules), so a
  cleartext password never appears on a command line (``ps``) or in a config file.
* **Passwords never travel on argv either**: a URL that names a user but has no password
  (``redis://bridge@127.0.0.1:6379/0``) means "take this user's password from the keys dir"
  (``resolve_url``). Every URL that is logged goes through ``mask_url``.

API (what the supervisor, the CLI and the bridge call):

``RedisUsers.ensure(keys_dir) -> RedisUsers``
    Load ``keys_dir/redis.json``, creating it (random 256-bit passwords for every user in
    ``USERS``) when missing, and adding a user a file of an older version lacks (``lease``,
    ``consumer``, ``candles``; the others keep their passwords). ``RedisUsers.load(keys_dir)``
    reads only (``RedisAuthError`` if the file is missing or broken).
``users.server_args() -> list[str]``
    Extra argv for the embedded valkey-server / redis-server (>= 7.0: selectors): ``--user``
    directives for ``default`` (off) and every user, passwords as hashes.
``users.acl_lines() -> list[str]`` / ``users.write_acl_file(path)``
    The same rules as ACL-file lines (``aclfile`` of an external server you run yourself).
``users.url(base_url, user) -> str``
    ``base_url`` with ``user:password@`` put in (scheme, host, port, db, query kept; works for
    ``rediss://``). For in-process use only: never log it, never put it on argv.
``resolve_url(url, keys_dir) -> str``
    A URL naming a user without a password gets that user's password from ``keys_dir``; any
    other URL is returned unchanged (an external Redis keeps the credentials you gave it).
``mask_url(url) -> str``
    The URL with its password replaced by ``***``: what to log.

What the supervisor (``shardex up`` / ``shardex redis``) must do when it has a keys dir:

1. ``users = RedisUsers.ensure(keys_dir)`` before starting the embedded server, and append
   ``users.server_args()`` to ``embedded_redis_argv(...)`` (after the other options). Keep
   ``--protected-mode no`` out of a secure start or keep it: with ACL users and the default user
   off, protected mode has nothing to protect (it only guards a passwordless default user).
2. Start the bridge with ``--keys-dir KEYS_DIR`` and ``--redis-url
   redis://bridge@HOST:PORT/0`` (``bridge_url(layout.redis_url)``): the bridge fills in the
   password itself, so it is never on a command line. Replicated engines (``--role auto``)
   likewise get ``redis://lease@HOST:PORT/0`` (``user_url(url, "lease")``).
3. Print the Redis endpoint with ``mask_url`` (or without credentials at all), and say how a
   consumer authenticates: user ``reader`` (reads) or ``consumer`` (consumer groups), password
   in ``KEYS_DIR/redis.json``.
``--insecure`` (no keys dir): none of this; the embedded server runs as before.

Consumer groups (user ``consumer``): ``XGROUP CREATE`` (and ``CREATECONSUMER``/``DELCONSUMER``),
``XREADGROUP``, ``XACK``, ``XPENDING``, ``XCLAIM``, ``XAUTOCLAIM``. These change a group's state
(its last-delivered ID, pending lists), never a stream's entries; ``XGROUP CREATE … MKSTREAM``
can create an *empty* stream (never at a fence or lease key). A group is named by an argument,
not a key, so no ACL can keep one application's ``consumer`` out of another's group: give each
application its own user (docs/redis.md). Not allowed: ``XADD``, ``XDEL``, ``XTRIM``,
``XSETID``, ``XGROUP DESTROY/SETID``, ``DEL``, ``SCAN``/``KEYS`` (consumers know their symbols
from the markets).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from shardex.auth import locked, write_private

REDIS_FILE = "redis.json"
USERS = ("bridge", "reader", "lease", "consumer", "candles")
LEASE_KEY_PATTERN = "~shardex:lease:*"  # shardex.lease's keys, and nothing else

# Key families. The bridge writes the event, trade and balance streams and each replicated
# shard's epoch fence (``shardex:events:I:epoch``, ``shardex:balances:J:epoch``: WRITE_SCRIPT's
# GET then SET of a newer epoch). A stream key ends in its shard number (``…:events:3``) or a
# symbol; a fence key ends in ``:epoch``: the ``*[0-9]`` patterns keep a stream command off the
# fences (an XADD or XGROUP … MKSTREAM there would turn the fence into a stream and jam every
# write of that shard), and ``*:epoch`` keeps GET/SET off the streams.
STREAMS = ("shardex:events:*", "shardex:trades:*", "shardex:balances:*", "shardex:orders:*")
STREAMS_ONLY = ("shardex:events:*[0-9]", "shardex:trades:*", "shardex:balances:*[0-9]",
                "shardex:orders:*[0-9]")  # fmt: skip
FENCES = ("shardex:events:*:epoch", "shardex:balances:*:epoch")


def _keys(perm: str, patterns: tuple[str, ...]) -> tuple[str, ...]:
    """``perm`` (``~`` read-write, ``%R~`` read, ``%W~`` write) before each pattern."""
    return tuple(perm + k for k in patterns)


def _selector(*rules: str) -> str:
    """One ACL selector (Redis/Valkey >= 7.0): these commands on these keys only. A command is
    allowed when the user's root rules or any one selector allow it with all its keys."""
    return "(" + " ".join(rules) + ")"


# Per user: its root rules (commands and the keys they may name), then its selectors.
# Sub-commands are named (``script|load``) so a user gets exactly that one. ``select``:
# redis-py sends SELECT when the URL names a db other than 0.
#
# bridge: EVALSHA of WRITE_SCRIPT names every key of a batch (streams and the fence), so the
# root patterns cover both; the commands the script runs are checked again, one by one, against
# the selectors (Redis checks a script's commands as the calling user: a script cannot lend a
# user a command it lacks, so XADD must be granted — on stream keys only). It may not SET, DEL,
# XTRIM, XDEL, XSETID, RENAME, EXPIRE… anything, nor GET or SET a stream key.
BRIDGE_COMMANDS = (
    "+evalsha",  # the batch write script (it runs XADD/XRANGE/XLEN/XINFO/GET/SET, each checked)
    "+script|load",  # load that script (first use, after a server restart)
    "+ping",  # outage probe
    "+select",
    *_keys("~", STREAMS),
    _selector("+xadd", *_keys("%W~", STREAMS_ONLY)),
    # resume, duplicates, and the script's check that nobody trimmed a stream (XINFO STREAM)
    _selector("+xrange", "+xrevrange", "+xlen", "+xinfo|stream", *_keys("%R~", STREAMS_ONLY)),
    _selector("+get", "+set", *_keys("~", FENCES)),  # the epoch fence, nothing else
)
# reader: reads, and nothing that changes any state (no consumer groups: a group's pending list
# and last-delivered id are state another consumer relies on).
_READS = ("+xread", "+xrange", "+xrevrange", "+xlen", "+xinfo", "+xpending",
          "+exists", "+type", "+ping", "+select")  # fmt: skip
# ... and the candles the candles worker writes (sorted sets and position hashes)
CANDLES_KEYS = "shardex:candles:*"
_CANDLE_READS = ("+zrange", "+zrangebyscore", "+zrevrange", "+zrevrangebyscore", "+hgetall",
                 "+hget")  # fmt: skip
READER_COMMANDS = (*_READS, *_CANDLE_READS, *_keys("%R~", (*STREAMS, CANDLES_KEYS)))
# consumer: the reads plus its consumer-group work. A group lives inside its stream's key and
# its name is an argument, which ACLs cannot match: every holder of this user can act on every
# group (see docs/redis.md for a user per application). Stream keys only (no MKSTREAM on a
# fence); never XGROUP DESTROY/SETID, never an entry written, trimmed or deleted.
CONSUMER_COMMANDS = (
    *_READS,
    "+xreadgroup",
    "+xgroup|create",
    "+xgroup|createconsumer",
    "+xgroup|delconsumer",
    "+xack",
    "+xclaim",
    "+xautoclaim",
    *_keys("~", STREAMS_ONLY),
)
# lease: the scripts of ``shardex.lease`` name all four keys of a shard's lease; each command
# they (and the process) run is allowed only on the key it is for: the holder
# ``shardex:lease:I`` (EXISTS/SET/PTTL/PEXPIRE/DEL), the epoch counter ``…:epoch`` (INCR/SET),
# the in-sync set ``…:isr`` (SET) and the epoch starts ``…:starts`` (HSET/HGETALL); GET reads
# any lease key. So the lease user cannot DEL an epoch counter (epochs would be reused), turn a
# key into another type, or expire the in-sync set; no stream command at all. TIME: a replica
# compares its wall clock with Redis's when it starts (``shardex.coord.skew``).
LEASE_COMMANDS = (
    "+evalsha",
    "+script|load",
    "+get",
    "+ping",
    "+time",
    "+select",
    LEASE_KEY_PATTERN,
    _selector("+exists", "+set", "+pttl", "+pexpire", "+del", "~shardex:lease:*[0-9]"),
    _selector("+incr", "+set", "~shardex:lease:*:epoch"),
    _selector("+set", "~shardex:lease:*:isr"),
    _selector("+hset", "+hgetall", "~shardex:lease:*:starts"),
)
# candles: reads the trades streams (never a consumer group: its position lives with its
# candles) and writes only its own keys, through its commit script (EVALSHA names only
# ``shardex:candles:*`` keys; the ZADD/ZREMRANGEBYSCORE/HSET it runs are checked again here).
CANDLES_COMMANDS = (
    "+evalsha",
    "+script|load",
    "+ping",
    "+select",
    "~" + CANDLES_KEYS,
    _selector("+xread", "+xrange", "+xrevrange", "+xlen", "+xinfo|stream",
              "%R~shardex:trades:*"),  # fmt: skip
    _selector("+hget", "+hgetall", "+hset", "+zadd", "+zremrangebyscore", "+zrangebyscore",
              "+zrevrange", "+zrange", "~" + CANDLES_KEYS),  # fmt: skip
)
RULES = {
    "bridge": BRIDGE_COMMANDS,
    "reader": READER_COMMANDS,
    "lease": LEASE_COMMANDS,
    "consumer": CONSUMER_COMMANDS,
    "candles": CANDLES_COMMANDS,
}


class RedisAuthError(Exception):
    """The Redis credentials file is missing or unusable; the message says which and why."""


def _hash(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


@dataclass(frozen=True)
class RedisUsers:
    """The cluster's Redis users and their passwords (``KEYS_DIR/redis.json``)."""

    passwords: dict[str, str]
    path: Path | None = None

    # -- the file ---------------------------------------------------------------------------------

    @classmethod
    def load(cls, keys_dir: str | Path) -> RedisUsers:
        """Read ``keys_dir/redis.json``; ``RedisAuthError`` if it is missing or broken."""
        path = Path(keys_dir) / REDIS_FILE
        passwords = _read(path)
        missing = [u for u in USERS if u not in passwords]
        if missing:
            raise RedisAuthError(
                f"{path} has no password for Redis user(s) {', '.join(missing)} (written by an "
                "older version: any `shardex up` with this keys dir adds them)"
            )
        return cls({u: passwords[u] for u in USERS}, path)

    @classmethod
    def ensure(cls, keys_dir: str | Path) -> RedisUsers:
        """Load the credentials, creating them on first use, and adding users a file of an
        older version lacks (existing passwords kept). Idempotent and safe to race."""
        d = Path(keys_dir)
        path = d / REDIS_FILE
        if path.exists() and set(USERS) <= set(_read(path)):
            return cls.load(d)
        with _lock(d):
            have = _read(path) if path.exists() else {}
            if not set(USERS) <= set(have):
                pw = {u: have.get(u) or secrets.token_urlsafe(32) for u in USERS}
                write_private(path, {"users": {u: {"password": p} for u, p in pw.items()}})
        return cls.load(d)

    def password(self, user: str) -> str:
        try:
            return self.passwords[user]
        except KeyError:
            raise RedisAuthError(f"no Redis user {user!r} (users: {', '.join(USERS)})") from None

    # -- the server -------------------------------------------------------------------------------

    def rules(self, user: str) -> list[str]:
        """ACL rules of ``user`` (password as its SHA-256 hash)."""
        if user not in RULES:
            raise RedisAuthError(f"no Redis user {user!r} (users: {', '.join(USERS)})")
        return [
            "reset",
            "on",
            f"#{_hash(self.password(user))}",
            "resetchannels",
            "-@all",
            *RULES[user],
        ]

    def acl_lines(self) -> list[str]:
        """``user …`` lines for an ACL file: the default user off, then our users."""
        lines = ["user default reset off"]
        lines += [" ".join(["user", u, *self.rules(u)]) for u in USERS]
        return lines

    def write_acl_file(self, path: str | Path) -> None:
        """Write ``acl_lines`` to ``path`` (0600) for a server started with ``--aclfile``."""
        p = Path(path)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(self.acl_lines()) + "\n")
        os.chmod(p, 0o600)

    def server_args(self) -> list[str]:
        """Extra argv for the embedded server: ``--user`` directives (hashes only)."""
        args = ["--user", "default", "reset", "off"]
        for u in USERS:
            args += ["--user", u, *self.rules(u)]
        return args

    # -- clients ----------------------------------------------------------------------------------

    def url(self, base_url: str, user: str) -> str:
        """``base_url`` with ``user``'s credentials. Never log it (``mask_url``)."""
        return with_credentials(base_url, user, self.password(user))


def _read(path: Path) -> dict[str, str]:
    """user → password of a credentials file (every user it names, each checked)."""
    try:
        raw = json.loads(path.read_text())
        users = raw["users"]
        passwords = {str(u): str(v["password"]) for u, v in users.items()}
    except FileNotFoundError:
        raise RedisAuthError(
            f"no Redis credentials in {path} (start the cluster once with this keys dir, "
            "or pass a --redis-url with user and password)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        why = type(exc).__name__
        raise RedisAuthError(f"{path} is not a shardex Redis credentials ({why})") from None
    if any(len(p) < 16 for p in passwords.values()):
        raise RedisAuthError(f"{path}: passwords must be at least 16 characters")
    return passwords


def _lock(directory: Path) -> AbstractContextManager[None]:
    """One creator of the credentials at a time (processes started together may race)."""
    return locked(directory / ".redis.lock")


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` with ``user:password@`` (quoted) in place of whatever credentials it had."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def url_user(url: str) -> tuple[str | None, str | None]:
    """(user, password) named in ``url`` (unquoted), each None when absent."""
    parts = urlsplit(url)
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return user, password


def user_url(base_url: str, user: str) -> str:
    """``base_url`` naming ``user`` without a password (safe for argv and logs): the process
    takes the password from its keys dir (``resolve_url``)."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(user, safe='')}@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def bridge_url(base_url: str) -> str:
    """``base_url`` naming user ``bridge`` without a password (safe for argv and logs)."""
    return user_url(base_url, "bridge")


def resolve_url(url: str, keys_dir: str | Path | None, create: bool = False) -> str:
    """A URL naming a user but no password gets that user's password from ``keys_dir``.

    A URL with a password, or with no user, is returned as given: credentials of an external
    Redis are the operator's, and a passwordless URL to an insecure cluster stays one.
    ``create``: make ``redis.json`` if missing (the bridge may start before the embedded server
    under honcho; both then use the same file), else a missing file is a ``RedisAuthError``.
    """
    user, password = url_user(url)
    if user is None or password is not None:
        return url
    if keys_dir is None:
        raise RedisAuthError(
            f"the Redis URL names user {user!r} without a password and no keys dir is given "
            "to look it up in"
        )
    users = RedisUsers.ensure(keys_dir) if create else RedisUsers.load(keys_dir)
    return users.url(url, user)


def mask_url(url: str) -> str:
    """``url`` safe to log: its password (if any) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            host = parts.hostname or ""
            if ":" in host:
                host = f"[{host}]"
            netloc = f"{parts.username or ''}:***@{host}"
            if parts.port is not None:
                netloc += f":{parts.port}"
        # redis-py also takes ?password=… in the query
        query = _PW_QUERY.sub(r"\1***", parts.query)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:  # unparsable: show nothing of it rather than a secret
        return "<redis url>"


_PW_QUERY = re.compile(r"((?:^|&)password=)[^&]*", re.IGNORECASE)

"""Identity: CURVE keys, the key registry, and the ZAP handler every listening socket uses.

Why this shape:

* **Identity comes from the connection's key, never from a field the client writes.** Every
  listening socket (router front and back, each shard's direct port and PUB) is a CURVE server;
  libzmq asks our ZAP handler about each new connection's public key and stamps the key's id as
  the ``User-Id`` of every message that arrives on it. The router forwards that id to the shard
  in a frame the client cannot write; the shard checks each command's ``account`` against it.
* **One registry file** (``DATA_DIR/keys/registry.json``, mode 0600) maps each public key to a
  role and the accounts it may act for. Processes re-read it when its mtime changes, so
  ``shardex keys add/revoke`` takes effect without a restart; a revoked key is refused at its next
  connection and each of its messages on an existing one is refused too.
* **Key files** hold one identity (public + secret key, the cluster's server public key, role,
  accounts), mode 0600, and are all a client needs: ``Client(endpoint, key="alice.key")``.
* **The ZAP handler is not a thread**: it is a socket that the process's own poll loop serves
  (``ZapHandler.serve``), so the single-writer processes stay single-threaded.

Roles: ``trader`` (orders for its accounts, reads), ``reader`` (market data and status only),
``admin`` (everything, any account: ops tools and the CLI), ``shard`` (may register as the one
shard index its key was issued for), ``bridge`` (reads events from shards).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("shardex.auth")

# ``feed``: a price feed's key (``shardex feed``): it may send index prices, nothing else
ROLES = ("trader", "reader", "admin", "shard", "bridge", "accounts", "feed")
# (router front, shard direct)
CLIENT_ROLES = frozenset(("trader", "reader", "admin", "bridge", "feed"))
EVENT_ROLES = frozenset(("bridge", "reader", "admin"))  # shard PUB subscribers
# router back: engine shards, and account shards (``accounts-J`` process keys)
SHARD_ROLES = frozenset(("shard", "accounts"))
ACCOUNT_LINK_ROLES = frozenset(("accounts",))  # an engine shard's account link
DOMAIN_CLIENTS, DOMAIN_SHARDS, DOMAIN_EVENTS = "clients", "shards", "events"
DOMAIN_ACCOUNT_LINK = "account-link"
DOMAIN_ROLES = {
    DOMAIN_CLIENTS: CLIENT_ROLES,
    DOMAIN_SHARDS: SHARD_ROLES,
    DOMAIN_EVENTS: EVENT_ROLES,
    DOMAIN_ACCOUNT_LINK: ACCOUNT_LINK_ROLES,
}
# A replicated shard's replication link: one ZAP domain per shard, ``replication-I``,
# that admits only shard I's own key (both replicas of shard I run with it); not a role set
# like the domains above, since "any shard key" would let shard J read shard I's stream.
DOMAIN_REPLICATION = "replication"
ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by RFC 27
REGISTRY_FILE = "registry.json"
SERVER_KEY_FILE = "server.key"
ADMIN_KEY_FILE = "admin.key"
MAX_NAME_LEN = 64
MISS_RELOAD_S = 0.01  # a flood of unknown keys costs at most 100 stat() calls a second


class AuthError(Exception):
    """A key file or registry that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class KeyInfo:
    """What one public key may do."""

    key: str  # z85 public key (40 chars): the User-Id of its connections
    name: str
    role: str
    accounts: frozenset[str]
    shard: int | None = None
    revoked: bool = False

    def may_act_for(self, account: str) -> bool:
        if self.revoked:
            return False
        if self.role == "admin":
            return True
        return self.role == "trader" and account in self.accounts

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "accounts": sorted(self.accounts),
            "shard": self.shard,
            "revoked": self.revoked,
        }


def replication_domain(shard: int, role: str = "shard") -> str:
    """The ZAP domain of a replication socket: engine shard ``shard``'s (``replication-I``)
    or, with ``role`` "accounts", account shard ``shard``'s (``replication-accounts-J``)."""
    if role == "accounts":
        return f"{DOMAIN_REPLICATION}-accounts-{shard}"
    return f"{DOMAIN_REPLICATION}-{shard}"


def replication_peer(info: KeyInfo | None, shard: int, role: str = "shard") -> bool:
    """Whether ``info`` (a live registry entry or None) may speak on the replication link of
    ``role`` shard ``shard``: only that shard's own process key (both of its replicas run with
    it); never another shard's, another tier's, a client's or the admin's."""
    return info is not None and not info.revoked and info.role == role and info.shard == shard


def domain_allows(domain: str, info: KeyInfo) -> bool:
    """Whether a live key may connect to a socket whose ZAP domain is ``domain``."""
    prefix = DOMAIN_REPLICATION + "-"
    if domain.startswith(prefix):
        index, role = domain[len(prefix) :], "shard"
        if index.startswith("accounts-"):
            index, role = index[len("accounts-") :], "accounts"
        return index.isdigit() and len(index) < 6 and replication_peer(info, int(index), role)
    return info.role in DOMAIN_ROLES.get(domain, frozenset())


def keypair() -> tuple[str, str]:
    """A new CURVE keypair as z85 text (public, secret)."""
    import zmq

    public, secret = zmq.curve_keypair()
    return public.decode("ascii"), secret.decode("ascii")


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created, in a 0700 dir) held across processes: for files
    that processes started together (honcho) may all try to create."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_private(path: Path, data: dict[str, Any]) -> None:
    """Write JSON readable by the owner only (0600), atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class Registry:
    """The key registry file: public key → ``KeyInfo``. Cheap to consult on every message."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._mtime: float | None = None
        self._miss_reload = 0.0  # monotonic time of the last re-read a lookup miss caused
        self.keys: dict[str, KeyInfo] = {}
        self.reload()

    def reload(self) -> bool:
        """Re-read the file if it changed; True when it did. A broken file keeps the last good
        table (and logs why) rather than locking everybody out or letting everybody in."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            if self.keys:
                log.error("key registry %s disappeared; keeping the last one read", self.path)
            return False
        if self._mtime == st.st_mtime_ns:
            return False
        try:
            raw = json.loads(self.path.read_text())
            keys = {k: _info(k, v) for k, v in raw.get("keys", {}).items()}
        except (OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
            log.error("key registry %s is unreadable (%s); keeping the last one read",
                      self.path, exc)  # fmt: skip
            return False
        self.keys = keys
        self._mtime = st.st_mtime_ns
        return True

    def lookup(self, key: str | bytes | None) -> KeyInfo | None:
        """The live (not revoked) entry of ``key``, or None.

        A miss re-reads the file first (if it changed; at most every ``MISS_RELOAD_S``): a key
        just added is known to every process at once (the router's ZAP handler re-reads on each
        connection, so without this a shard could refuse a new key the router accepted for up
        to a second). Hits never touch the file; revocations arrive with the periodic reload.
        """
        if key is None:
            return None
        if isinstance(key, bytes):
            key = key.decode("ascii", "replace")
        info = self.keys.get(key)
        if info is None or info.revoked:
            now = time.monotonic()
            if now - self._miss_reload < MISS_RELOAD_S:
                return None
            self._miss_reload = now
            if not self.reload():
                return None
            info = self.keys.get(key)
        return None if info is None or info.revoked else info

    def save(self) -> None:
        write_private(self.path, {"keys": {k: v.to_json() for k, v in self.keys.items()}})
        self._mtime = None
        self.reload()

    def add(
        self,
        name: str,
        role: str,
        accounts: Iterable[str] = (),
        shard: int | None = None,
        public: str | None = None,
    ) -> tuple[str, str | None]:
        """Register a key (a new keypair unless ``public`` is given); returns (public, secret)."""
        if role not in ROLES:
            raise AuthError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
        if not name or len(name) > MAX_NAME_LEN:
            raise AuthError(f"key name must be 1..{MAX_NAME_LEN} chars")
        accounts = frozenset(accounts)
        if role == "trader" and not accounts:
            raise AuthError("a trader key needs at least one --account")
        if any(not a or len(a) > 64 for a in accounts):
            raise AuthError("account names must be 1..64 chars")
        if role in ("shard", "accounts") and shard is None:
            raise AuthError(f"a {role} key needs its shard index")
        if any(i.name == name and not i.revoked for i in self.keys.values()):
            raise AuthError(f"a live key named {name!r} exists (revoke it first)")
        secret = None
        if public is None:
            public, secret = keypair()
        self.keys[public] = KeyInfo(public, name, role, accounts, shard)
        self.save()
        return public, secret

    def revoke(self, name_or_key: str) -> list[KeyInfo]:
        """Revoke every live key with this name (or this public key); returns what was revoked."""
        hits = [
            i for i in self.keys.values() if not i.revoked and name_or_key in (i.name, i.key)
        ]
        for i in hits:
            self.keys[i.key] = KeyInfo(i.key, i.name, i.role, i.accounts, i.shard, revoked=True)
        if hits:
            self.save()
        return hits


def _info(key: str, v: dict[str, Any]) -> KeyInfo:
    role = v["role"]
    if role not in ROLES or len(key) != 40:
        raise ValueError(f"bad entry {key[:8]}…")
    shard = v.get("shard")
    return KeyInfo(
        key,
        str(v.get("name", "")),
        role,
        frozenset(str(a) for a in v.get("accounts", ())),
        int(shard) if shard is not None else None,
        bool(v.get("revoked", False)),
    )


# ------------------------------------------------------------------------------ key files


@dataclass(frozen=True)
class KeyFile:
    """One identity as a client or process holds it."""

    public: str
    secret: str = field(repr=False)  # never in a log line or a traceback's locals repr
    server_public: str
    name: str = ""
    role: str = ""
    # what the registry granted when the file was written (a hint for clients: the default
    # account of a one-account trader key); the registry, not this, is what the cluster checks
    accounts: tuple[str, ...] = ()

    @classmethod
    def read(cls, path: str | Path) -> KeyFile:
        p = Path(path)
        try:
            raw = json.loads(p.read_text())
            accounts = tuple(str(a) for a in raw.get("accounts", ()))
            kf = cls(raw["public"], raw["secret"], raw["server_public"], raw.get("name", ""),
                     raw.get("role", ""), accounts)  # fmt: skip
        except FileNotFoundError:
            raise AuthError(f"key file {p} not found") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AuthError(f"key file {p} is not a shardex key file ({exc})") from None
        if len(kf.public) != 40 or len(kf.secret) != 40 or len(kf.server_public) != 40:
            raise AuthError(f"key file {p}: keys must be 40-char z85 text")
        mode = p.stat().st_mode & 0o077
        if mode:
            log.warning("key file %s is readable by others (mode %o); chmod 600 it", p, mode)
        return kf

    def write(self, path: str | Path) -> None:
        write_private(Path(path), {
            "public": self.public, "secret": self.secret, "server_public": self.server_public,
            "name": self.name, "role": self.role, "accounts": list(self.accounts),
        })  # fmt: skip


class KeyStore:
    """A cluster's ``keys`` directory: server keypair, registry, and the key files it issued."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    @property
    def registry_path(self) -> Path:
        return self.dir / REGISTRY_FILE

    def exists(self) -> bool:
        return (self.dir / SERVER_KEY_FILE).exists() and self.registry_path.exists()

    def server(self) -> KeyFile:
        """The cluster's server keypair (every listening socket's CURVE identity)."""
        return KeyFile.read(self.dir / SERVER_KEY_FILE)

    def registry(self) -> Registry:
        return Registry(self.registry_path)

    def init(self) -> bool:
        """Create the server keypair, the registry and an admin key if missing; True if created.

        Idempotent and safe to race (a lock file): processes started together by honcho may all
        call it; an existing cluster keeps its keys (clients' key files stay valid).
        """
        if self.exists():
            return False
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        with self._lock():
            if self.exists():
                return False
            public, secret = keypair()
            KeyFile(public, secret, public, "server", "server").write(self.dir / SERVER_KEY_FILE)
            Registry(self.registry_path).save()
            self.issue("admin", "admin", path=self.dir / ADMIN_KEY_FILE)
        return True

    def _lock(self) -> AbstractContextManager[None]:
        """One writer of the key store at a time (across processes)."""
        return locked(self.dir / ".lock")

    def issue(
        self,
        name: str,
        role: str,
        accounts: Iterable[str] = (),
        shard: int | None = None,
        path: str | Path | None = None,
    ) -> Path:
        """Register a new key and write its key file (default ``keys/<name>.key``).

        Callers hold the store's lock (``init``, ``process_key``) or use ``add``, which takes it.
        """
        server = self.server()
        accounts = sorted(set(accounts))
        public, secret = self.registry().add(name, role, accounts, shard)
        assert secret is not None
        out = Path(path) if path is not None else self.dir / f"{name}.key"
        KeyFile(public, secret, server.public, name, role, tuple(accounts)).write(out)
        return out

    def add(
        self,
        name: str,
        role: str,
        accounts: Iterable[str] = (),
        shard: int | None = None,
        path: str | Path | None = None,
    ) -> Path:
        """``issue`` under the store's lock (``shardex keys add``), creating the store first if
        needed: a key added while processes start and issue their own keys is never lost."""
        self.init()
        with self._lock():
            return self.issue(name, role, accounts, shard, path)

    def revoke(self, name_or_key: str) -> list[KeyInfo]:
        """Revoke every live key with this name or public key, under the store's lock."""
        with self._lock():
            return self.registry().revoke(name_or_key)

    def process_key(self, name: str, role: str, shard: int | None = None) -> KeyFile:
        """The key of an internal process (``shard-3``, ``bridge``), issued on first use.

        A key already issued and registered is read without the store's lock (key files and
        the registry are replaced atomically): every process start used to take the lock, so
        one process stopped while holding it (SIGSTOP during its start) blocked every restart
        of every other process until it resumed. The lock is taken only to issue."""
        self.init()
        path = self.dir / f"{name}.key"
        kf = self._registered(path)
        if kf is not None:
            return kf
        with self._lock():
            if path.exists():
                kf = KeyFile.read(path)
                if self.registry().lookup(kf.public) is not None:
                    return kf
                path.unlink()  # revoked or lost from the registry: issue a fresh one
            # A live key of this name and role without its file: a start killed between the
            # registry write and the key file's. Its secret was never written, so nobody holds
            # it. (Another role under this name is somebody's key: ``add`` still refuses.)
            registry = self.registry()
            for info in list(registry.keys.values()):
                if info.name == name and info.role == role and not info.revoked:
                    registry.revoke(info.key)
            return KeyFile.read(self.issue(name, role, shard=shard, path=path))


    def _registered(self, path: Path) -> KeyFile | None:
        """The key file at ``path`` if it exists, reads whole and its key is live in the
        registry; else None (the caller issues one under the lock)."""
        try:
            kf = KeyFile.read(path)
        except AuthError:
            return None
        return kf if self.registry().lookup(kf.public) is not None else None


# ------------------------------------------------------------------------------ sockets


def server_socket(sock: Any, server: KeyFile, domain: str) -> None:
    """Make ``sock`` (before bind) a CURVE server whose peers ZAP checks in ``domain``."""
    import zmq

    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, server.secret.encode("ascii"))
    sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())


def client_socket(sock: Any, key: KeyFile) -> None:
    """Make ``sock`` (before connect) a CURVE client with ``key``, trusting its server key."""
    import zmq

    sock.setsockopt(zmq.CURVE_SERVERKEY, key.server_public.encode("ascii"))
    sock.setsockopt(zmq.CURVE_PUBLICKEY, key.public.encode("ascii"))
    sock.setsockopt(zmq.CURVE_SECRETKEY, key.secret.encode("ascii"))


class ZapHandler:
    """Answers libzmq's ZAP requests for one process's context, from the registry.

    Register ``sock`` in the process's poller and call ``serve()`` when it is readable. Refusals
    say ``authentication failed: unknown key`` (or ``… not allowed here``), never more: a
    refusal must not tell an attacker which keys exist.
    """

    def __init__(self, ctx: Any, registry: Registry) -> None:
        import zmq

        self.registry = registry
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(ZAP_ENDPOINT)
        self.allowed = 0
        self.refused = 0
        self._zmq = zmq

    def serve(self) -> int:
        """Answer every waiting request (non-blocking); returns how many."""
        zmq = self._zmq
        n = 0
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return n
            n += 1
            self._answer(frames)

    def _answer(self, frames: list[bytes]) -> None:
        # ROUTER adds the peer id and REQ's empty delimiter: [id, b"", version, request id,
        # domain, address, identity, mechanism, credentials...]
        if len(frames) < 8:
            return
        head = frames[:2]
        version, request_id, domain, _address, _identity, mechanism = frames[2:8]
        creds = frames[8:]
        self.registry.reload()
        code, text, user = b"400", b"authentication failed: unknown key", b""
        if version != b"1.0":
            text = b"authentication failed: bad ZAP version"
        elif mechanism == b"CURVE" and creds and len(creds[0]) == 32:
            from zmq.utils import z85

            key = z85.encode(creds[0]).decode("ascii")
            info = self.registry.lookup(key)
            if info is not None and domain_allows(domain.decode("ascii", "replace"), info):
                code, text, user = b"200", b"OK", key.encode("ascii")
            elif info is not None:
                text = b"authentication failed: key not allowed here"
        if code == b"200":
            self.allowed += 1
        else:
            self.refused += 1
            log.warning("refused a %s connection on %s: %s", mechanism.decode(errors="replace"),
                        domain.decode(errors="replace"), text.decode())  # fmt: skip
        self.sock.send_multipart([*head, b"1.0", request_id, code, text, user, b""])

    def close(self) -> None:
        self.sock.close(0)


def user_of(frame: Any) -> str | None:
    """The authenticated key id (``User-Id``) of a message frame received with copy=False."""
    try:
        return frame.get("User-Id")
    except Exception:  # no CURVE on this socket (insecure mode), or libzmq without metadata
        return None

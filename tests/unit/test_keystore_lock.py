"""The key store's lock is not taken to read a key already issued.

Seen in the chaos suite: the bridge was SIGSTOPped while starting, inside the store's lock
(``process_key`` took it at every start); the engine shard killed meanwhile could not restart
until the bridge resumed (30 s, "cluster not ready"). A stopped process may hold the lock; it
must only delay issuing a new key, never reading one.
"""

from __future__ import annotations

import fcntl
import threading

import pytest

from shardex.auth import AuthError, KeyStore


def test_an_issued_process_key_is_read_while_another_process_holds_the_lock(tmp_path) -> None:
    store = KeyStore(tmp_path / "keys")
    first = store.process_key("shard-0", "shard", 0)  # issued (takes the lock)
    got: list = []
    # another open file description, as another process has: flock excludes it too
    with open(store.dir / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        t = threading.Thread(
            target=lambda: got.append(store.process_key("shard-0", "shard", 0)), daemon=True
        )
        t.start()
        t.join(10)
        blocked = t.is_alive()
        fcntl.flock(held, fcntl.LOCK_UN)
    t.join(10)
    assert not blocked, "reading an issued key waited for the store's lock"
    assert got == [first]


def test_a_revoked_process_key_is_issued_again_under_the_lock(tmp_path) -> None:
    store = KeyStore(tmp_path / "keys")
    old = store.process_key("bridge", "bridge")
    assert store.revoke(old.public)
    new = store.process_key("bridge", "bridge")
    assert new.public != old.public and new.role == "bridge"
    assert store.registry().lookup(new.public) is not None


def test_a_start_killed_between_registry_and_key_file_can_start_again(tmp_path) -> None:
    """A process killed while issuing its own key (seen: the bridge, kill -9'd 54 ms after it
    started) left the key registered but its file unwritten: every restart then refused with
    "a live key named 'bridge' exists" and the bridge never came back. The secret was never
    written, so nobody holds that key: the restart revokes it and issues a fresh one."""
    store = KeyStore(tmp_path / "keys")
    store.init()
    orphan, _secret = store.registry().add("bridge", "bridge")  # registered, no key file
    assert not (store.dir / "bridge.key").exists()
    kf = store.process_key("bridge", "bridge")
    registry = store.registry()
    assert kf.public != orphan
    assert registry.lookup(kf.public) is not None and registry.lookup(orphan) is None
    assert store.process_key("bridge", "bridge").public == kf.public  # and it stays


def test_a_process_key_name_held_by_another_role_still_refuses(tmp_path) -> None:
    """Only an orphan of the process's own role is revoked: a key somebody added under that
    name with another role is theirs, and the process refuses to start as before."""
    store = KeyStore(tmp_path / "keys")
    store.init()
    theirs, _secret = store.registry().add("accounts-0", "trader", ["alice"])
    with pytest.raises(AuthError, match="a live key named 'accounts-0' exists"):
        store.process_key("accounts-0", "accounts", 0)
    assert store.registry().lookup(theirs) is not None

"""The key store's lock is not taken to read a key already issued.

Seen in the chaos suite: the bridge was SIGSTOPped while starting, inside the store's lock
(``process_key`` took it at every start); the engine shard killed meanwhile could not restart
until the bridge resumed (30 s, "cluster not ready"). A stopped process may hold the lock; it
must only delay issuing a new key, never reading one.
"""

from __future__ import annotations

import fcntl
import threading

from shardex.auth import KeyStore


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

"""The key store a deployed cluster mounts (``shardex deploy keys``).

On one box every process may issue its own key on first start (``KeyStore.process_key``),
because they all share one keys dir. Pods do not: each gets a copy of a Kubernetes Secret, so a
key issued in one pod would be missing from every other pod's registry (the router would refuse
the shard). Every process key is therefore issued up front, in the operator's key store, and
only what the processes need is copied to a folder the Secret is made from: never the admin
key, which stays with the operator.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from shardex.auth import ADMIN_KEY_FILE, REGISTRY_FILE, SERVER_KEY_FILE, KeyStore
from shardex.redisauth import REDIS_FILE, RedisUsers


def process_keys(shards: int, accounts: int) -> list[tuple[str, str, int | None]]:
    """(name, role, shard) of every process key a cluster of ``shards`` engine shards and
    ``accounts`` account shards uses (as each process would issue it on first start)."""
    out: list[tuple[str, str, int | None]] = [(f"shard-{i}", "shard", i) for i in range(shards)]
    out += [(f"accounts-{j}", "accounts", j) for j in range(accounts)]
    return out + [
        ("bridge", "bridge", None),
        ("gateway", "reader", None),
        ("candles-worker", "reader", None),
        ("feed", "feed", None),
    ]


def issue_all(keys_dir: str | Path, shards: int, accounts: int) -> list[str]:
    """Create the store if missing (server key, registry, admin key), issue every process
    key and the Redis users' passwords; idempotent (existing keys are kept). Returns the file
    names a pod needs."""
    store = KeyStore(keys_dir)
    store.init()
    names = [SERVER_KEY_FILE, REGISTRY_FILE, REDIS_FILE]
    for name, role, shard in process_keys(shards, accounts):
        store.process_key(name, role, shard)
        names.append(f"{name}.key")
    RedisUsers.ensure(keys_dir)
    return names


# Who needs which file (docs/deploy.md "Keys across hosts"): a pod gets only these of the
# Secret, so a pod taken over does not hand out every process's key and every Redis password.
CURVE = (SERVER_KEY_FILE, REGISTRY_FILE)  # every process that speaks CURVE
OWN_KEY = {"engine": "shard-{i}.key", "accounts": "accounts-{i}.key", "bridge": "bridge.key",
           "gateway": "gateway.key", "candles": "candles-worker.key",
           "feed": "feed.key"}  # fmt: skip
# Redis clients (and the server, which makes its users from the file); the shards only while
# their lease is in Redis. The file holds every user's password (one file, one format).
REDIS_USERS = frozenset({"redis", "bridge", "gateway", "candles", "history"})
NO_CURVE = frozenset({"redis", "history"})  # they speak only to Redis


def pod_keys(component: str, index: int | None, lease_in_redis: bool) -> list[str]:
    """The files of the keys Secret a pod of ``component`` (shard or router ``index``) is given:
    the table of docs/deploy.md "Keys across hosts", never the admin key."""
    out = [] if component in NO_CURVE else list(CURVE)
    if component in OWN_KEY:
        out.append(OWN_KEY[component].format(i=index))
    if component in REDIS_USERS or (lease_in_redis and component in ("engine", "accounts")):
        out.append(REDIS_FILE)
    return out


def secret_dir(keys_dir: str | Path, out: str | Path, shards: int, accounts: int) -> list[str]:
    """``issue_all``, then copy what the pods need to ``out`` (mode 0700, files 0600): the
    folder ``kubectl create secret generic shardex-keys --from-file=OUT`` is made from."""
    names = issue_all(keys_dir, shards, accounts)
    assert ADMIN_KEY_FILE not in names
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest.chmod(0o700)
    for name in names:
        shutil.copyfile(Path(keys_dir) / name, dest / name)
        (dest / name).chmod(0o600)
    return names

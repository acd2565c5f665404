"""Which coordination store a URL names, and its lease and placement stores.

``etcd://host:port,host:port`` -> an etcd cluster (``EtcdClient``); anything else is a Redis
URL (``redis://``, ``rediss://``, ``unix://``), as every ``--redis-url`` of a replica took
before. The rest of the code holds a *client* (what ``connect`` returns, or the simulator's
Redis twin) and asks this module for the store of one lease or of the placement map.
"""

from __future__ import annotations

from typing import Any

import redis

from shardex.coord.base import LeaseStore
from shardex.coord.etcd import SCHEME, EtcdClient, EtcdLeaseStore, EtcdStore, EtcdUnavailable
from shardex.coord.redisstore import RedisLeaseStore
from shardex.placement.store import RedisStore, Store
from shardex.redisauth import resolve_url


def is_etcd(url: str | None) -> bool:
    """Whether ``url`` names an etcd cluster (``etcd://``) rather than a Redis."""
    return bool(url) and str(url).startswith(SCHEME + "://")


def connect(url: str, keys_dir: str | None = None) -> Any:
    """The coordination client of ``url``: an ``EtcdClient`` for ``etcd://``, else a Redis
    client with short timeouts (a slow Redis must not stall the loop).

    In a secure cluster a Redis URL names the ``lease`` user without a password
    (``redis://lease@HOST:PORT/0``, what ``shardex up`` passes) and the password comes from
    ``keys_dir/redis.json``, so it is never on a command line; a URL with a password, or an
    insecure cluster's URL without a user, is used as given. Raises ``RedisAuthError`` when the
    URL names a user whose password cannot be found."""
    if is_etcd(url):
        return EtcdClient.from_url(url)
    return redis.Redis.from_url(
        resolve_url(url, keys_dir), socket_timeout=0.25, socket_connect_timeout=0.25
    )


def lease_store(client: Any, name: str) -> LeaseStore:
    """Lease ``name``'s store on ``client`` (an etcd client, or a Redis client or twin)."""
    if isinstance(client, EtcdClient):
        return EtcdLeaseStore(client, name)
    return RedisLeaseStore(client, name)


def placement_store(client: Any) -> Store:
    """The placement map's store on ``client`` (next to the leases)."""
    if isinstance(client, EtcdClient):
        return EtcdStore(client)
    return RedisStore(client)


def check_access(client: Any) -> str | None:
    """Why this client can never use the lease (wrong credentials, a user without the lease
    commands), or None: usable, or the store merely unreachable now (the loops retry that)."""
    if isinstance(client, EtcdClient):
        try:
            client.get("shardex:lease:access-check")
        except EtcdUnavailable:
            return None  # not up (yet): the standby keeps trying
        return None
    try:
        client.get("shardex:lease:access-check")
    except redis.exceptions.AuthenticationError as exc:
        return f"Redis refused the credentials ({exc})"
    except redis.exceptions.ConnectionError:
        return None  # not up (yet): the standby keeps trying
    except redis.exceptions.ResponseError as exc:  # NOAUTH, NOPERM
        return f"Redis refused the lease's commands ({exc})"
    return None

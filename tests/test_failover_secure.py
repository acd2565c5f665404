"""Failover, secure (issue 15 phase 2): the replication link under CURVE and the lease under a
Redis ACL user, as ``shardex up --replicas 2`` runs them by default.

Real processes and sockets on loopback: a router and two ``--role auto`` replicas with keys
(``tests/test_failover.py``'s ``Pair``), a real redis-server with the cluster's ACL users.
Attackers hold every other kind of key (a trader's, another shard's, an account shard's, the
admin's) or none; none may read the replication stream or feed either side, and garbage at
the replication port from any side is refused and counted, never applied, never a crash.
Nothing here asserts time.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
import redis
import zmq
from conftest import ROOT, Cluster, redis_server_binary
from test_failover import Pair, _journal_ids, _place_until_ok
from test_failover import test_kill9_primary_under_load_loses_nothing_acked as _kill9_body
from test_failover import test_sigstop_primary_is_fenced_after_resume as _sigstop_body
from test_redis_acl import BINARIES, AclRedis, refused

from shardex.auth import (
    KeyFile,
    KeyStore,
    ZapHandler,
    client_socket,
    domain_allows,
    keypair,
    replication_domain,
    server_socket,
)
from shardex.engine.codes import OP_NEW
from shardex.engine.markets import DEFAULT_MARKETS
from shardex.journal import Journal
from shardex.lease import Lease, connect
from shardex.node.replica import ACK, DIV, REC, SUB, Standby, replica_dir
from shardex.redisauth import RedisUsers, user_url
from shardex.wire.protocol import packb, unpackb

SYMBOL = "BTC-USD"


@pytest.fixture
def secure_pair(tmp_path: Path) -> Any:
    """A secure Pair: keys in DATA_DIR/keys, Redis with the cluster's ACL users, the replicas
    on the lease as user ``lease`` (its password read from the keys dir, never on argv)."""
    keys = tmp_path / "data" / "keys"
    KeyStore(keys).init()
    users = RedisUsers.ensure(keys)
    (tmp_path / "redis").mkdir()
    server = AclRedis(redis_server_binary(), users, tmp_path / "redis")
    try:
        p = Pair(tmp_path, user_url(server.url, "lease"), str(keys),
                 observer_url=users.url(server.url, "lease"))  # fmt: skip
    except BaseException:
        server.stop()
        raise
    p.redis = server  # type: ignore[attr-defined]
    try:
        yield p
    finally:
        p.stop()
        server.stop()


def test_secure_kill9_primary_under_load_loses_nothing_acked(secure_pair: Pair) -> None:
    _kill9_body(secure_pair)
    for name in ("r0", "r1"):  # the lease's password never reached a log line
        out = secure_pair.output(name)
        assert secure_pair.redis.users.password("lease") not in out  # type: ignore[attr-defined]


def test_secure_sigstop_primary_is_fenced_after_resume(secure_pair: Pair) -> None:
    _sigstop_body(secure_pair)

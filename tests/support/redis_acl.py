"""A real Redis with the cluster's ACL users (``AclRedis``); the check that a call is refused."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import redis

from shardex.node.supervisor import redis_binary
from shardex.redisauth import (
    RedisUsers,
)
from tests.support.ports import free_port
from tests.support.redis import redis_server_binary

BINARIES = {"redis-server": redis_server_binary(), "embedded": redis_binary()}


class AclRedis:
    """A real server on a free loopback port, ACL users from ``users`` (``--user`` args, as the
    supervisor starts the embedded one, or an ``--aclfile``)."""

    def __init__(
        self,
        binary: str,
        users: RedisUsers,
        workdir: Path,
        aclfile: bool = False,
        tls: Path | None = None,
    ) -> None:
        """``tls``: a directory with ``cert.pem``/``key.pem`` (see ``self_signed``): TLS only."""
        self.binary = binary
        self.users = users
        self.dir = workdir
        self.port = free_port()
        self.tls = tls
        if tls is None:
            self.url = f"redis://127.0.0.1:{self.port}/0"
        else:
            ca = tls / "cert.pem"
            self.url = f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={ca}&ssl_cert_reqs=required"
        self.aclfile = aclfile
        self.proc: subprocess.Popen | None = None
        self.start()

    def argv(self) -> list[str]:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.dir), "--loglevel", "warning"]  # fmt: skip
        if self.tls is not None:
            cert, key = str(self.tls / "cert.pem"), str(self.tls / "key.pem")
            argv[2] = "0"  # no plain port
            argv += ["--tls-port", str(self.port), "--tls-cert-file", cert, "--tls-key-file", key,
                     "--tls-ca-cert-file", cert, "--tls-auth-clients", "no"]  # fmt: skip
        if self.aclfile:
            path = self.dir / "users.acl"
            self.users.write_acl_file(path)
            return [*argv, "--aclfile", str(path)]
        return [*argv, *self.users.server_args()]

    def start(self) -> None:
        self.log = open(self.dir / f"redis-{self.port}.log", "ab")  # noqa: SIM115 - closed in stop
        self.proc = subprocess.Popen(self.argv(), stdout=self.log, stderr=subprocess.STDOUT)
        r = self.client("bridge", socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binary} exited: {self.output()[-2000:]}")
            try:
                if r.ping():
                    return
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.binary} not ready: {self.output()[-2000:]}")

    def output(self) -> str:
        self.log.flush()
        logs = sorted(self.dir.glob("redis-*.log"))
        return "".join(p.read_text(errors="replace") for p in logs)

    def client(self, user: str | None, **kw) -> redis.Redis:
        url = self.url if user is None else self.users.url(self.url, user)
        kw.setdefault("decode_responses", True)
        return redis.Redis.from_url(url, **kw)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def refused(call) -> str:
    """The error text of a call that must be refused (fails the test if it is not)."""
    with pytest.raises(redis.exceptions.ResponseError) as info:
        call()
    return str(info.value)

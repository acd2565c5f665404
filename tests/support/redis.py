"""A real Redis server for the tests (Debian's redis-server if installed, else the embedded one)."""

from __future__ import annotations

import shutil
import subprocess
import time

import redis

from shardex.node.supervisor import redis_binary
from tests.support.ports import free_port


def redis_server_binary() -> str:
    """Debian's real redis-server when installed (CI installs it), else the embedded one."""
    return shutil.which("redis-server") or redis_binary()


class RedisServer:
    """A real Redis server on a free loopback port, AOF on, in its own directory."""

    def __init__(self, directory: str, extra_args: tuple[str, ...] = ()) -> None:
        self.dir = directory
        self.extra_args = extra_args  # more server options (e.g. --enable-debug-command local)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.dir,
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        r = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if r.ping():
                    return
            except redis.exceptions.RedisError:
                time.sleep(0.05)
        raise TimeoutError("redis did not start")

    def client(self):
        return redis.Redis(port=self.port, decode_responses=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

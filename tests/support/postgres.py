"""A private, throwaway PostgreSQL server for the tests (Debian's package: initdb + pg_ctl).

The server listens on a unix socket in its own temp directory only (no TCP port to collide
with), runs as an unprivileged user (initdb and postgres refuse root, and the tests run as root
here and in CI) and is stopped and deleted by ``stop``. One per test session is enough: each
test gets a fresh database of it (``new_database``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid

import psycopg

PG_GLOB = "/usr/lib/postgresql/*/bin"


def pg_bin_dir() -> str | None:
    """Where initdb and pg_ctl are (the newest Debian PostgreSQL), or None."""
    found = [d for d in glob.glob(PG_GLOB) if os.path.exists(os.path.join(d, "pg_ctl"))]
    if found:
        return sorted(found, key=lambda d: int(d.split("/")[-2].split(".")[0]))[-1]
    on_path = shutil.which("pg_ctl")
    return os.path.dirname(on_path) if on_path else None


def _runner() -> tuple[list[str], int | None, int | None]:
    """(argv prefix, uid, gid) that runs a command as an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return [], None, None
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"], pw.pw_uid, pw.pw_gid
    raise RuntimeError("running as root and no unprivileged user (postgres, nobody) to run as")


class PostgresServer:
    """``initdb`` + ``pg_ctl start`` in a temp dir; ``url(db)`` for psycopg."""

    def __init__(self) -> None:
        bindir = pg_bin_dir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql "
                               "(tests/run.sh does)")  # fmt: skip
        self.bin = bindir
        self.prefix, uid, gid = _runner()
        self.dir = tempfile.mkdtemp(prefix="shardex-pg-")
        if uid is not None:
            os.chown(self.dir, uid, gid)
        self.data = os.path.join(self.dir, "data")
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")  # fmt: skip
        opts = f"-k {self.dir} -c listen_addresses='' -c fsync=off -c max_connections=20"
        self._run("pg_ctl", "-D", self.data, "-o", opts, "-w", "-t", "60",
                  "-l", os.path.join(self.dir, "log"), "start")  # fmt: skip

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.prefix, os.path.join(self.bin, tool), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)  # fmt: skip

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@/{db}?host={self.dir}"

    def new_database(self) -> str:
        """A fresh, empty database of this server; its URL."""
        name = "t" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        except (subprocess.SubprocessError, OSError):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

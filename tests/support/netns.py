"""Hosts on one box: Linux network namespaces on a bridge, each with its own address, and the
processes started in them. Shared by the multi-host rehearsal (``bench/multihost.py``) and its
chaos test (``tests/chaos/test_multihost.py``).

Every namespace is a "host" ``hK`` with address ``10.38.X.(K+1)`` on a bridge in the caller's
namespace (which has ``10.38.X.1``: the bench reads Redis and the journals from there). Names
carry a per-run tag, so two runs never collide, and ``delete`` removes all of them (processes
first). A *partition* is a ``tc`` ``blackhole`` qdisc on both ends of the host's veth (``netem loss
100%`` where the kernel has netem; this box's has not): every packet is silently dropped in
both directions, the links stay up and TCP connections stay "established" (a dead switch
port, not a refused connection); ``heal`` removes it.
"""

from __future__ import annotations

import ctypes
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

PREFIX = "10.38"  # the addresses this rehearsal may use (10.38.0.0/16)


def ip(*args: str) -> None:
    """``ip ARGS``, raising with its stderr on failure."""
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def netns_unavailable() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "needs root to create network namespaces (ip netns add)"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "needs iproute2 (the ip and tc commands)"
    return None


class Hosts:
    """``names`` hosts (namespaces) on one bridge; ``addr[name]`` is a host's address."""

    def __init__(self, names: list[str]) -> None:
        tag = f"{os.getpid() % 1000:03d}{random.randrange(256):02x}"  # (≤ 15 chars per name)
        self.bridge = f"sxmb{tag}"
        self.ns = {n: f"sxm{tag}{n}" for n in names}
        self.veth = {n: f"sxv{tag}{n}" for n in names}
        self.peer = {n: f"sxp{tag}{n}" for n in names}
        used = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
        free = [x for x in range(1, 255) if f"{PREFIX}.{x}." not in used]
        if not free:
            raise RuntimeError(f"no free {PREFIX}.X.0/24 subnet")
        net = f"{PREFIX}.{random.choice(free)}"
        self.gateway = f"{net}.1"
        self.addr = {n: f"{net}.{k + 2}" for k, n in enumerate(names)}
        self.created: list[tuple[str, str]] = []  # (kind, name), deleted in reverse
        self.cut: set[str] = set()
        try:
            self._build(names)
        except BaseException:
            self.delete()
            raise

    def _build(self, names: list[str]) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        self.created.append(("link", self.bridge))
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for n in names:
            ip("netns", "add", self.ns[n])
            self.created.append(("netns", self.ns[n]))
            ip("link", "add", self.veth[n], "type", "veth", "peer", "name", self.peer[n])
            self.created.append(("link", self.veth[n]))
            ip("link", "set", self.peer[n], "netns", self.ns[n])
            ip("link", "set", self.veth[n], "master", self.bridge)
            ip("link", "set", self.veth[n], "up")
            ip("-n", self.ns[n], "addr", "add", f"{self.addr[n]}/24", "dev", self.peer[n])
            ip("-n", self.ns[n], "link", "set", self.peer[n], "up")
            ip("-n", self.ns[n], "link", "set", "lo", "up")

    def prefix(self, host: str) -> list[str]:
        """The command prefix that runs a program on ``host`` (``exec``: the pid is the
        program's own)."""
        return ["ip", "netns", "exec", self.ns[host]]

    def partition(self, host: str) -> None:
        """Cut ``host`` off: every packet to and from it is dropped (both veth ends)."""
        _tc(["qdisc", "add", "dev", self.veth[host], "root", "blackhole"])
        _tc(["qdisc", "add", "dev", self.peer[host], "root", "blackhole"],
            self.ns[host])  # fmt: skip
        self.cut.add(host)

    def heal(self, host: str) -> None:
        """Undo ``partition``."""
        _tc(["qdisc", "del", "dev", self.veth[host], "root"], check=False)
        _tc(["qdisc", "del", "dev", self.peer[host], "root"], self.ns[host], check=False)
        self.cut.discard(host)

    def delete(self) -> None:
        """Remove every namespace, veth and the bridge this object made (idempotent)."""
        for kind, name in reversed(self.created):
            if kind == "netns":
                subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
            else:
                subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=10)
        self.created.clear()


def _tc(args: list[str], ns: str | None = None, check: bool = True) -> None:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    subprocess.run([*prefix, "tc", *args], check=check, capture_output=True, timeout=10)


class Fleet:
    """Processes started on hosts, each in a session of its own with its log in ``logs``;
    ``stop`` ends every one still running (SIGTERM, then SIGKILL)."""

    def __init__(self, hosts: Hosts, logs: Path, cwd: Path, env: dict[str, str]) -> None:
        self.hosts = hosts
        self.logs = logs
        self.cwd = cwd
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}
        self.files: dict[str, IO[bytes]] = {}

    def start(self, name: str, host: str, argv: list[str]) -> subprocess.Popen:
        """Run ``argv`` on ``host`` as process ``name`` (a restart appends to its log)."""
        log = self.files.get(name)
        if log is None:
            log = self.files[name] = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen([*self.hosts.prefix(host), *argv], stdout=log,
                                stderr=subprocess.STDOUT, cwd=self.cwd, env=self.env,
                                start_new_session=True, preexec_fn=_die_with_parent)  # fmt: skip
        self.procs[name] = proc
        return proc

    def shardex(self, name: str, host: str, args: list[str]) -> subprocess.Popen:
        """``python -m shardex.cli ARGS`` on ``host``."""
        return self.start(name, host, [sys.executable, "-m", "shardex.cli", *args])

    def log_text(self, name: str) -> str:
        self.files[name].flush()
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop(self, names: list[str] | None = None) -> None:
        """SIGTERM to each process's group, SIGKILL after 10 s."""
        chosen = [self.procs[n] for n in (names or list(self.procs)) if n in self.procs]
        for proc in chosen:
            _signal(proc, signal.SIGTERM)
        for proc in chosen:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                proc.wait(5)
        if names is None:
            for f in self.files.values():
                f.close()


def _die_with_parent() -> None:
    """``preexec_fn``: the kernel sends SIGTERM to the child when its parent exits, however
    (``PR_SET_PDEATHSIG``; kept across ``ip netns exec``'s exec): a rehearsal killed with
    SIGKILL leaves no cluster running. (Its namespaces stay: ``ip netns list | grep sxm``.)"""
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1: PR_SET_PDEATHSIG


def _signal(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

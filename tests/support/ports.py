"""Ports for test processes: per pytest-xdist worker disjoint, below the ephemeral range.

Servers started by the tests (``shardex up``, Redis, stand-ins) are told their ports, so the
ports are chosen here: from a region of ``[FLOOR, ephemeral low)`` that belongs to this xdist
worker alone (two workers can never pick the same port), never from the kernel's ephemeral
range (a port there that is free when checked can be taken by an outgoing connection before
the server binds it), and not one handed out recently in this process (a standby binds its
ports only when promoted: free when checked is not enough). Each pick is also checked free
(other test runs may share the box). Sockets the test binds itself use ``bind(':*')`` instead.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections import deque

from shardex.layout import REPLICA_BASE, Layout

FLOOR = 10000
# a layout spans base..base+REPLICA_BASE+1100 (the account tier's replica ports included)
SPAN = REPLICA_BASE + 1100
_recent: deque[frozenset[int]] = deque(maxlen=64)  # port sets handed out lately (this process)
_rng = random.Random(os.getpid() ^ time.monotonic_ns())


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux; 32768 elsewhere)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def worker() -> tuple[int, int]:
    """(index, count) of this pytest-xdist worker; (0, 1) without xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0
    return index % max(count, 1), max(count, 1)


def region() -> tuple[int, int]:
    """This worker's ports: [lo, hi), disjoint from every other worker's."""
    index, count = worker()
    top = ephemeral_low()
    lo_all = FLOOR
    if top - FLOOR < 2 * SPAN:  # an unusual ephemeral range (starts low): the old choice
        lo_all, top = 20000, 60000
    size = (top - lo_all) // count
    if size < SPAN + 200:
        raise RuntimeError(f"{count} workers: too many for the ports below {top}")
    lo = lo_all + index * size
    return lo, lo + size


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing is bound to ``host:port`` right now (a TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _take(ports: list[int]) -> bool:
    """Hand out ``ports`` if none was handed out lately and all are free."""
    wanted = frozenset(ports)
    if any(wanted & old for old in _recent):
        return False
    if not all(port_free(p) for p in ports):
        return False
    _recent.append(wanted)
    return True


def free_layout(shards: int, routers: int = 1, accounts: int = 0) -> Layout:
    """A layout in this worker's region whose every port is free right now, the account
    tier's and the ``--replicas 2`` ports included."""
    lo, hi = region()
    for _ in range(400):
        layout = Layout("127.0.0.1", _rng.randrange(lo, hi - SPAN), shards, routers,
                        accounts=accounts)  # fmt: skip
        if _take([*layout.ports(), *layout.replica_ports()]):
            return layout
    raise RuntimeError(f"no free port range in {lo}..{hi}")


def free_port() -> int:
    """One port in this worker's region, free right now (for a server the test starts and
    must name the port of; a socket the test binds itself uses ``bind(':*')`` instead)."""
    lo, hi = region()
    for _ in range(400):
        port = _rng.randrange(lo, hi)
        if _take([port]):
            return port
    raise RuntimeError(f"no free port in {lo}..{hi}")


def endpoint() -> str:
    """``tcp://127.0.0.1:PORT`` on a ``free_port()``."""
    return f"tcp://127.0.0.1:{free_port()}"


def listening(port: int) -> bool:
    """True when something LISTENs on 127.0.0.1/0.0.0.0:``port`` (read from /proc, so asking
    never connects: connecting to a port nobody listens on yet can self-connect and take it)."""
    want = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                next(fh)
                for line in fh:
                    f = line.split()
                    if f[1].endswith(want) and f[3] == "0A":  # 0A: LISTEN
                        return True
        except OSError:
            continue
    return False


def wait_listening(ports: list[int], timeout: float = 20.0, proc=None) -> None:
    """Until every port in ``ports`` LISTENs; returns early when ``proc`` died (the caller
    reports why)."""
    deadline = time.monotonic() + timeout
    while not all(listening(p) for p in ports):
        if proc is not None and proc.poll() is not None:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"ports {ports} not listening within {timeout}s")
        time.sleep(0.05)

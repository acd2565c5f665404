"""One transport, with an in-memory twin.

Every process of a cluster talks through a ``Transport``: the socket factories (``Context``,
``AsyncContext``), the ``Poller``, pyzmq's socket-type/option constants and one error type,
``TransportError`` (pyzmq's ``ZMQError``; ``WouldBlock`` = ``zmq.Again`` is the one subclass a
node decides on, and ``errno`` says the rest, e.g. ``EHOSTUNREACH``). Two implementations:

* ``ZMQ``: real ZeroMQ sockets (what every process runs on);
* ``MemTransport(hub)``: the in-memory twin (``shardex.net.mem``): the same socket roles in
  one process and one thread, for running a whole cluster in a test (``shardex.net.cluster``)
  and, later, a deterministic simulator.

``clock`` (``shardex.clock``) is where a node on this transport reads the time: ``REAL`` for
both by default, a virtual clock in the simulator. ``disk`` (``shardex.journal.disk``) is where
it keeps its journal, snapshots and epoch file: ``OS_DISK`` by default, a ``SimDisk``
(``shardex.sim.disk``) in the simulator, set on the transport (``t.disk = SimDisk()``).

The interface is the subset of pyzmq the node loops already used, on purpose: a node written
against ``self.zmq`` (its transport) runs unchanged on either, so the in-memory runs exercise
the production loops, not models of them. Socket roles (options, CURVE, HWMs) are declared once
in ``shardex.net.roles``. ``in_process`` tells a node that it shares its process with other
nodes: it must leave process-wide settings alone (the garbage collector, signal handlers, CPU
pinning, the default Prometheus registry and its HTTP port).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio

from shardex.clock import REAL, Clock
from shardex.journal.disk import OS_DISK, Disk
from shardex.net.mem import MemContext, MemHub, MemPoller
from shardex.net.memasync import MemAsyncContext

TransportError = zmq.ZMQError
WouldBlock = zmq.Again


class Transport:
    """What a node needs of its transport; also answers every constant pyzmq's module has
    (``t.DEALER``, ``t.NOBLOCK``, ``t.Again``...), so it stands where the ``zmq`` module did."""

    disk: Disk = OS_DISK  # where this node's journal lives (shardex.journal.disk)

    def __init__(
        self,
        name: str,
        context: Callable[[], Any],
        poller: Callable[[], Any],
        async_context: Callable[[], Any],
        *,
        in_process: bool,
        clock: Clock = REAL,
    ) -> None:
        for attr in dir(zmq):
            if attr.isupper():
                setattr(self, attr, getattr(zmq, attr))
        self.name = name
        self.Context = context
        self.Poller = poller
        self.AsyncContext = async_context
        self.in_process = in_process
        self.clock = clock  # where this node reads the time (shardex.clock)
        self.Again = zmq.Again
        self.ZMQError = zmq.ZMQError

    def __repr__(self) -> str:
        return f"<Transport {self.name}>"


ZMQ = Transport("zmq", zmq.Context, zmq.Poller, zmq.asyncio.Context, in_process=False)


def mem_transport(hub: MemHub | None = None, clock: Clock = REAL) -> Transport:
    """An in-memory transport over ``hub`` (a new network if None); ``.hub`` is it. Nodes on
    one hub may each have their own transport, e.g. to read different ``clock``s."""
    hub = hub or MemHub()
    t = Transport("mem", lambda: MemContext(hub), MemPoller, lambda: MemAsyncContext(hub),
                  in_process=True, clock=clock)  # fmt: skip
    t.hub = hub  # type: ignore[attr-defined]
    return t


__all__ = ["ZMQ", "MemHub", "Transport", "TransportError", "WouldBlock", "mem_transport"]

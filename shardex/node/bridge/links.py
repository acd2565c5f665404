"""The bridge's links to one shard: its DEALER (``ShardLink``: requests matched to replies),
the CURVE handshake watch of a socket (``Handshakes``) and the loop's state of the shard
(``ShardState``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from shardex.aio import within
from shardex.auth import KeyFile
from shardex.clock import REAL
from shardex.net.roles import shard_requests
from shardex.node.bridge.tracker import ShardTracker
from shardex.wire.protocol import decode_reply, encode_request
from shardex.wire.transport import AsyncReplies, RequestIds

log = logging.getLogger("shardex.bridge")


class ShardLink:
    """Requests to one shard's direct port; replies are matched to their waiters by request id
    (``transport.AsyncReplies``: one reader task, so concurrent requests never take each
    other's answers). A reply whose request timed out is passed to that request's ``late``
    callback if it had one (a repair answered late still carries good events), else dropped.
    """

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        endpoint: str,
        on_malformed: Callable[[], None],
        key: KeyFile | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.sock = shard_requests(ctx, zmq, endpoint, key)
        self.replies = AsyncReplies(on_malformed)
        self.ids = RequestIds()

    async def read(self) -> None:
        """The reader task: forever dispatch replies by request id."""
        await self.replies.read(self.sock)

    async def request(
        self, cmd: tuple, timeout: float, late: Callable[[Any, Any], None] | None = None
    ) -> tuple[Any, Any] | None:
        """Send one command; (error, results) of its reply, or None if none came in time."""
        req = self.ids.next()
        fut = self.replies.expect(req)
        try:
            await self.sock.send_multipart([b"bridge", req, encode_request([cmd])], zmq.NOBLOCK)
        except zmq.Again:
            self.replies.forget(req)
            return None  # not connected (IMMEDIATE) or pipe full: as good as no answer
        try:
            payload = await within(fut, timeout)
        except TimeoutError:
            self.replies.forget(req, late)
            return None
        return decode_reply(payload)

    def close(self) -> None:
        self.sock.close(0)


class Handshakes:
    """Watches one socket's CURVE handshakes (its monitor): a refusal is an ALERT and a reconnect.

    libzmq does not retry a connection whose key the server's ZAP handler refused: it would stay
    dead even after the key is registered again. So on a refusal the endpoint is disconnected and
    connected again after a pause (1 s, doubling up to ``MAX_PAUSE``), with one ALERT per refusal
    (rate-limited by ``alert``). A handshake that fails for another reason (the server has another
    cluster's key, or is not a CURVE server) is retried by libzmq itself; it is only reported.
    """

    MAX_PAUSE = 30.0
    EVENTS = (
        zmq.EVENT_HANDSHAKE_FAILED_AUTH
        | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_SUCCEEDED
    )

    def __init__(
        self,
        sock: zmq.asyncio.Socket,
        peers: Mapping[str, tuple[int | str, str]],
        alert: Callable[..., None],
    ) -> None:
        self.sock = sock
        self.peers = peers  # endpoint → (alert label: shard index or "router", what it is)
        self.alert = alert
        self.mon = sock.get_monitor_socket(self.EVENTS)
        self.pause: dict[str, float] = {}  # endpoint → pause before the next reconnect
        self.refused = 0
        self.failed = 0
        self._loop = asyncio.get_running_loop()

    async def run(self) -> None:
        while True:
            msg = await self.mon.recv_multipart()
            try:
                ev = parse_monitor_message(msg)
                endpoint = ev["endpoint"].decode("utf-8", "replace")
                event, value = int(ev["event"]), int(ev["value"])
            except Exception:  # a monitor message we cannot read: nothing to act on
                continue
            label, what = self.peers.get(endpoint, ("router", endpoint))
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                if self.pause.pop(endpoint, None) is not None:
                    log.info("%s (%s) accepts the bridge's key again", what, endpoint)
                continue
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.refused += 1
                pause = min(self.MAX_PAUSE, self.pause.get(endpoint, 0.5) * 2)
                self.pause[endpoint] = pause
                self.alert(
                    label,
                    "auth",
                    f"auth {endpoint}",
                    "%s (%s) refused the bridge's key (ZAP status %d): the bridge key is not "
                    "in that cluster's registry, revoked, or not allowed there; connecting "
                    "again in %.0f s",
                    what,
                    endpoint,
                    value,
                    pause,
                )
                self._loop.call_later(pause, self._reconnect, endpoint)
                continue
            self.failed += 1
            self.alert(
                label,
                "auth",
                f"handshake {endpoint}",
                "CURVE handshake with %s (%s) failed (%s): it has another cluster's server key "
                "or does not speak CURVE (insecure?); retrying",
                what,
                endpoint,
                "protocol error" if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL else "no detail",
            )

    def _reconnect(self, endpoint: str) -> None:
        if self.sock.closed:
            return
        try:
            self.sock.disconnect(endpoint)
        except zmq.ZMQError:
            pass  # libzmq already dropped it
        try:
            self.sock.connect(endpoint)
        except zmq.ZMQError as exc:
            log.warning("cannot connect to %s again: %s", endpoint, exc)

    def close(self) -> None:
        if not self.sock.closed:
            try:
                self.sock.disable_monitor()
            except zmq.ZMQError:
                pass
        self.mon.close(0)


STARTUP_GRACE_S = 60.0  # a shard that never answered yet may be recovering its journal this long


def still_starting(answered: bool, age: float, grace: float = STARTUP_GRACE_S) -> bool:
    """Whether a shard's silence is its start (never answered yet, within ``grace`` seconds
    of the bridge's start): said once at INFO, not as a WARNING of a shard that went quiet."""
    return not answered and age < grace


@dataclass
class ShardState:
    """The loop's side of one shard: its tracker, link and wake-up event."""

    index: int
    tracker: ShardTracker
    link: ShardLink | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    repair_timeout: float = 2.0
    unreachable: bool = False
    answered: bool = False  # it has answered a status request once (it is no longer starting)
    waiting_said: bool = False  # "waiting for it to answer" logged (once, while it starts)
    # when the bridge made it, on the bridge's clock (``Bridge`` passes it; REAL otherwise)
    created: float = field(default_factory=REAL.monotonic)
    repaired_at: int = 0  # first seq of the last repair asked (no progress → pace the next)
    idle: int = 0
    # "events": an engine shard (``shardex:events:<i>`` + trades); "balances": an account shard
    # (all its events are tracked by seq, its balance changes are written to
    # ``shardex:balances:<j>``)
    kind: str = "events"
    # A replicated shard's newest leader epoch seen (PUB messages, topology): PUB messages of
    # an older epoch are dropped, and writes carry it (WRITE_SCRIPT checks it). 0: none seen.
    epoch: int = 0
    # endpoint → (alert label, what) of its DEALER's handshake watch; a followed leader's
    # direct endpoint is added, so a refused key there is reported under this shard's label
    peers: dict[str, tuple[int | str, str]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Metric/alert label: ``"3"`` for engine shard 3, ``"a3"`` for account shard 3."""
        return str(self.index) if self.kind == "events" else f"a{self.index}"

    @property
    def name(self) -> str:
        return f"shard {self.index}" if self.kind == "events" else f"account shard {self.index}"


class Watches:
    """The handshake watches of the bridge's sockets (secure mode only: none when insecure)."""

    def __init__(self, key: KeyFile | None, alert: Callable[..., None]) -> None:
        self.key = key
        self.alert = alert
        self.items: dict[asyncio.Future, Handshakes] = {}  # a watch's task → its monitor

    def watch(
        self, sock: zmq.asyncio.Socket, peers: Mapping[str, tuple[int | str, str]]
    ) -> asyncio.Future | None:
        """Report (and recover from) refused handshakes on ``sock``; its task, or None."""
        if self.key is None:
            return None
        w = Handshakes(sock, peers, self.alert)
        task = asyncio.ensure_future(w.run())
        self.items[task] = w
        return task

    async def drop(self, task: asyncio.Future | None) -> None:
        """Stop the watch of ``task``, e.g. on a short-lived socket: that one, whichever was
        started last (two topology requests at once, from the leader follower and the shard
        count follower, each dropped the other's monitor, or a shard link's: that watch died
        and took the bridge down with it)."""
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        w = self.items.pop(task, None)
        if w is not None:
            w.close()

    def close(self) -> None:
        for w in self.items.values():
            w.close()

"""Status polling and leader following: every poll interval the bridge asks each shard its seq
(lag, tail repair, stall, Redis ahead of the shard); a shard that stops answering, or answers
``not_leader`` (a standby now holds that endpoint), is looked up in the router's topology and,
once a newer epoch registered elsewhere, its SUB and DEALER move there (``Follower``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import zmq
import zmq.asyncio

from shardex.clock import REAL, Clock
from shardex.node.bridge.config import BridgeConfig
from shardex.node.bridge.links import ShardState, still_starting
from shardex.node.bridge.metrics import LAG, STALLED, Alerts
from shardex.node.bridge.replies import denied, not_leader, parse_status
from shardex.node.bridge.topology import Endpoints
from shardex.wire.protocol import OP_STATUS
from shardex.wire.pub import Malformed

log = logging.getLogger("shardex.bridge")


class Follower:
    """Where each shard's leader is: the endpoint lists by kind (``events``: engine shards,
    ``balances``: account shards), the SUB of each kind, and its handshake-watch peers."""

    def __init__(self, topology: Callable[[], Awaitable[tuple[Endpoints, Endpoints]]]) -> None:
        self.topology = topology
        self.endpoints: dict[str, Endpoints] = {"events": [], "balances": []}
        self.subs: dict[str, zmq.asyncio.Socket] = {}
        # each SUB's handshake-watch peers (endpoint → label, what), by ShardState.kind
        self.pub_peers: dict[str, dict[str, tuple[int | str, str]]] = {
            "events": {},
            "balances": {},
        }

    async def follow(self, st: ShardState) -> None:
        """A shard that does not answer (or answers ``not_leader``) may have a new leader
        elsewhere: ask the router, and move this shard's SUB and DEALER to the endpoints of a
        newer epoch only (the old leader's PUB is disconnected: nothing from an older epoch is
        read again). Entries are written by seq, so an event seen from both leaders is written
        once. A shard that is not replicated (epoch 0) never moves: it comes back where it was.
        """
        mine = self.endpoints[st.kind]
        sub = self.subs.get(st.kind)
        if not 0 <= st.index < len(mine) or sub is None or st.link is None:
            return
        topo, atopo = await self.topology()
        theirs = atopo if st.kind == "balances" else topo
        if len(theirs) != len(mine):
            return
        old, new = mine[st.index], theirs[st.index]
        st.epoch = max(st.epoch, new["epoch"])
        if new["epoch"] <= old.get("epoch", 0) or (new["pub"], new["direct"]) == (
            old["pub"], old["direct"]):  # fmt: skip
            mine[st.index] = {**old, "epoch": max(new["epoch"], old.get("epoch", 0))}
            return
        self._move(st, sub, old, new)
        mine[st.index] = new

    def _move(
        self, st: ShardState, sub: zmq.asyncio.Socket, old: dict[str, Any], new: dict[str, Any]
    ) -> None:
        assert st.link is not None
        log.warning(
            "%s: leader epoch %d now at PUB %s, direct %s (was epoch %s)",
            st.name, new["epoch"], new["pub"], new["direct"], old.get("epoch"),
        )  # fmt: skip
        self.pub_peers[st.kind][new["pub"]] = (st.label, f"{st.name}'s PUB")
        st.peers[new["direct"]] = (st.label, f"{st.name}'s direct port")
        for sock, before, after in ((sub, old["pub"], new["pub"]),
                                    (st.link.sock, old["direct"], new["direct"])):  # fmt: skip
            if before != after:
                try:
                    sock.disconnect(before)
                except zmq.ZMQError:
                    pass
                sock.connect(after)
        st.link.endpoint = new["direct"]


class StatusPoller:
    """One poll loop per shard (``run``), reporting through ``alerts``; it paces itself with
    the event loop's timers and stamps requests and answers with ``clock``."""

    def __init__(
        self,
        cfg: BridgeConfig,
        alerts: Alerts,
        follow: Callable[[ShardState], Awaitable[None]],
        clock: Clock = REAL,
    ) -> None:
        self.mono = clock.monotonic
        self.cfg = cfg
        self.alerts = alerts
        self.follow = follow

    async def run(self, st: ShardState) -> None:
        """Every poll interval: ask the shard its seq (lag, tail repair, stall and behind)."""
        assert st.link is not None
        while True:
            sent = self.mono()
            reply = await st.link.request((OP_STATUS,), timeout=self.cfg.status_timeout)
            seq = self._seq(st, reply)
            if seq is None:
                await self._silent(st, sent)
            else:
                self._answered(st, seq, sent)
            LAG.labels(st.label).set(st.tracker.lag)
            await asyncio.sleep(self.cfg.poll_interval)

    def _seq(self, st: ShardState, reply: tuple[Any, Any] | None) -> int | None:
        """The shard's seq from its answer; None when it gave none (refused, not the leader,
        garbage or silent)."""
        if reply is None:
            return None
        error, _ = reply
        if denied(error):
            self.alerts.refused(st, "status", error)
        elif not_leader(error):
            # a standby (or a fenced leader) holds this endpoint now: not garbage, not a
            # stall; the leader is elsewhere, find it (``_silent``)
            if not st.unreachable:
                assert st.link is not None
                log.warning("%s at %s answers not leader (%s); following its leader",
                            st.name, st.link.endpoint, str(error)[:200])  # fmt: skip
                st.unreachable = True
        else:
            try:
                return parse_status(*reply)
            except Malformed as exc:
                self.alerts.malformed("reply", 1, f"status of {st.name}: {exc}")
        return None

    async def _silent(self, st: ShardState, sent: float) -> None:
        if not st.unreachable and still_starting(st.answered, sent - st.created):
            if not st.waiting_said:  # (every shard is silent while the cluster starts)
                log.info("%s does not answer yet (starting?): waiting for it", st.name)
                st.waiting_said = True
        elif not st.unreachable:
            log.warning("%s does not answer its status requests", st.name)
            st.unreachable = True
        await self.follow(st)

    def _answered(self, st: ShardState, seq: int, sent: float) -> None:
        tr = st.tracker
        st.answered = True
        if st.unreachable:
            log.info("%s answers again", st.name)
            st.unreachable = False
        out = tr.on_status(seq, sent, self.mono())
        if out.behind:
            self.alerts.alert(
                st.label, "behind", "behind",
                "%s is at seq %d but Redis already holds entries above it (last written %d): "
                "a foreign entry, or the shard lost its state; rewinding to the highest entry "
                "at or below %d", st.name, seq, tr.last, seq,
            )  # fmt: skip
        if out.stalled:
            STALLED.labels(st.label).set(1)
            self.alerts.alert(
                st.label, "stalled", "stalled",
                "%s is reachable and at seq %d, but Redis has been stuck at %d for %.0f s "
                "(pending %d)", st.name, seq, tr.last, tr.stall_after, len(tr.pending),
            )  # fmt: skip
        elif out.stalled is False:
            STALLED.labels(st.label).set(0)
            log.info("%s is flowing again (Redis at seq %d)", st.name, tr.last)
        st.wake.set()

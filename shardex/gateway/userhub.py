"""The private ``user`` channel in the gateway: logins, subscriptions, fan-out by account,
resume, and cancel-on-disconnect, around the pure ``UserFeed``.

The hub's one XREAD loop reads every account shard's ``orders`` and ``balances`` streams
beside the engines' ``events`` streams and hands their entries here (``entries``): one read
per stream whatever the number of users; each message is built once for an account that
someone follows and queued to that account's connections (``followers``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from shardex.gateway import metrics as m
from shardex.gateway.apikeys import ApiKeyRecord
from shardex.gateway.hub import Conn
from shardex.gateway.messages import error
from shardex.gateway.userauth import LoginRefused, UserRequest, parse_user, verify_login
from shardex.gateway.userfeed import (
    BALANCES_PREFIX,
    EVENTS_PREFIX,
    ORDERS_PREFIX,
    UserFeed,
    entry_seq,
    long,
    short,
)
from shardex.wire.codes import (
    GATEWAY_UNAVAILABLE,
    LOGIN_REQUIRED,
    NOT_ALLOWED,
    SESSION_ENDED,
    SLOW_CLIENT,
)

log = logging.getLogger("shardex.gateway")
PREFILL = 20_000  # orders entries read back per account shard at start (owners of older orders)
REPLAY_MAX = 10_000  # entries a resume reads per stream; more behind: resumed false
REPLAY_PAGE = 1000


@dataclass
class UserSub:
    """One connection's ``user`` subscription: its message counter, where it is in each
    stream, and (while a resume replays) the live messages that wait."""

    accounts: frozenset[str]
    seq: int = 0
    live: bool = True
    pos: dict[str, int] = field(default_factory=dict)  # src → seq of the last entry queued
    safe: dict[str, int] = field(default_factory=dict)  # pos when the queue was last empty
    # None once it fell behind (told resync_required: it gets nothing until it resubscribes)
    held: list[tuple[str, dict[str, Any]]] | None = field(default_factory=list)


@dataclass
class Session:
    """What a connection logged in as; ``cod``: cancel its key's orders when it drops."""

    rec: ApiKeyRecord
    cod: bool = False
    sub: UserSub | None = None
    alive: Callable[[], bool] | None = None  # a browser session's: does it still live?


class UserHub:
    """Sessions, followers per account, and the feed; ``rest`` verifies logins (the same keys,
    window and replay memory as the signed REST API) and owns the per-key SDK clients."""

    def __init__(self, r: Any, rest: Any, accounts: Callable[[], Awaitable[int]],
                 pos: Mapping[str, str], cod_timeout_ms: int = 10_000) -> None:  # fmt: skip
        self.r, self.rest, self.account_count, self.pos = r, rest, accounts, pos
        self.feed = UserFeed(self.wanted)
        self.sessions: dict[Conn, Session] = {}
        self.followers: dict[str, set[Conn]] = {}
        self.cod_timeout_ms = cod_timeout_ms
        self.cod: dict[str, tuple[int, asyncio.Task[None]]] = {}  # key id → (conns, task)
        self.closing = False

    def wanted(self, account: str) -> bool:
        return account in self.followers

    # -- the streams ------------------------------------------------------------------------------

    async def keys(self) -> list[str]:
        """The account shards' orders and balances streams (none without the account tier,
        or while the cluster does not answer: asked again at the next discovery)."""
        try:
            n = await self.account_count()
        except Exception as exc:  # noqa: BLE001 - the cluster away: the other streams flow
            log.warning("account shard count: %s", exc)
            return []
        return [f"{p}{j}" for j in range(n) for p in (ORDERS_PREFIX, BALANCES_PREFIX)]

    async def start(self, key: str) -> str:
        """A stream's top id (where live reading starts); an orders stream's recent entries
        teach the owners of orders placed before the gateway started."""
        top = await self.r.xrevrange(key, "+", "-", count=PREFILL if key.startswith(
            ORDERS_PREFIX) else 1)  # fmt: skip
        for _, f in reversed(top if key.startswith(ORDERS_PREFIX) else []):
            self.feed.learn(f)
        return top[0][0] if top else "0-0"

    def entries(self, key: str, entries: list[tuple[str, dict[str, str]]]) -> None:
        """New entries of one stream (the hub's XREAD): messages to the followers."""
        now = time.monotonic()
        if key.startswith(EVENTS_PREFIX):
            out = self.feed.events(key, entries, now)
        elif key.startswith(ORDERS_PREFIX):
            out = self.feed.orders(key, entries, now)
        else:
            out = self.feed.balances(key, entries, now)
        self.deliver(out)

    def tick(self) -> None:
        """Once a second: held entries past their time (a fill without its trade's price),
        and the connections whose browser session ended."""
        self.deliver(self.feed.expire(time.monotonic()))
        m.USER_DROPPED.set(self.feed.dropped)
        self.end_sessions()

    def end_sessions(self) -> None:
        """A connection logged in by a browser session that was logged out or expired since
        (or whose key was revoked) is told ``session_ended`` and stops: the cookie the
        upgrade carried no longer stands for the key, so neither does the socket."""
        for conn, session in list(self.sessions.items()):
            if session.alive is not None and not session.alive():
                self.drop(conn)
                m.SESSIONS_ENDED.inc()
                conn.control(error(SESSION_ENDED, "the browser session of this connection "
                                   "ended (logged out or expired): log in again"))  # fmt: skip

    def deliver(self, out: list[tuple[str, dict[str, Any]]]) -> None:
        for account, msg in out:
            body = json.dumps(msg, separators=(",", ":"))  # once, whoever follows the account
            for conn in list(self.followers.get(account, ())):
                session = self.sessions.get(conn)
                if session is not None and session.sub is not None:
                    self.send(conn, session.sub, msg, body)

    def send(self, conn: Conn, sub: UserSub, msg: dict[str, Any], body: str) -> None:
        """Queue one message with the subscription's next ``seq``; a client that fell behind
        is told where to resume from (its queue was dropped) and gets nothing until then."""
        if sub.live:
            self._push(conn, sub, msg, body)
        elif sub.held is not None:  # (a resume replays: live messages wait for its end)
            sub.held.append((body, msg))
            if len(sub.held) > conn.outbox.limit:  # as bounded as its queue
                self.fell_behind(conn)

    def _push(self, conn: Conn, sub: UserSub, msg: dict[str, Any], body: str) -> bool:
        if not conn.outbox:  # everything queued before went to the socket
            sub.safe = dict(sub.pos)
        sub.seq += 1
        if conn.push(f'{{"seq":{sub.seq},{body[1:]}', "user"):
            sub.pos[msg["src"]] = max(sub.pos.get(msg["src"], 0), msg["src_seq"])
            return True
        sub.seq -= 1
        return False

    def fell_behind(self, conn: Conn) -> None:
        """The connection's queue was dropped (a user message or a public one overflowed
        it): its user subscription stops and is told where it surely has everything."""
        session = self.sessions.get(conn)
        sub = session.sub if session is not None else None
        if sub is None or sub.held is None or conn.closed:
            return
        sub.live, sub.held = False, None  # nothing more until it subscribes again
        m.RESYNCS.labels("user", "slow").inc()
        conn.control({"type": "resync_required", "channel": "user", "since": dict(sub.safe),
                      "code": SLOW_CLIENT, "name": "slow_client"})  # fmt: skip

    # -- the connection's messages ----------------------------------------------------------------

    def login_session(self, conn: Conn, rec: ApiKeyRecord,
                      alive: Callable[[], bool] | None = None) -> None:  # fmt: skip
        """A browser session's key (set on the upgrade request): logged in already, for as
        long as ``alive()`` says the session lives (``end_sessions``)."""
        self.sessions[conn] = Session(rec, alive=alive)
        conn.behind.append(lambda: self.fell_behind(conn))

    async def handle(self, conn: Conn, raw: str | bytes) -> bool:
        """A ``login`` or a ``user`` (un)subscription: acted on (True); anything else is the
        public channels' (False)."""
        try:
            req = parse_user(raw)
        except LoginRefused as exc:
            m.ERRORS.labels(exc.error()["name"]).inc()
            conn.control(exc.error())
            return True
        if req is None:
            return False
        if req.op == "login":
            await self.login(conn, req)
        elif (session := self.sessions.get(conn)) is None:
            conn.control(error(LOGIN_REQUIRED, "log in first: {\"op\": \"login\", ...}", req.id))
        elif req.op == "unsubscribe":
            self.unfollow(conn, session)
            conn.control({"type": "ack", "op": "unsubscribe", "channel": "user", "id": req.id})
        else:
            await self.subscribe(conn, session, req)
        return True

    async def login(self, conn: Conn, req: UserRequest) -> None:
        self.rest.auth.learn(req.key)  # (a key added while the gateway runs)
        try:
            key = verify_login(self.rest.auth.verifier, req, int(time.time() * 1000))
        except LoginRefused as exc:
            m.ERRORS.labels(exc.error()["name"]).inc()
            conn.control(exc.error())
            return
        rec = self.rest.records[key.key_id]
        if req.cod:  # (first: a login again of the same key does not cancel in between)
            self.arm(rec)
        if conn in self.sessions:
            self.drop(conn)  # a second login replaces the first
        else:
            conn.behind.append(lambda: self.fell_behind(conn))
        self.sessions[conn] = Session(rec, req.cod)
        conn.control({"type": "login", "key": key.key_id, "accounts": sorted(key.accounts),
                      "cancel_on_disconnect": req.cod, "id": req.id})  # fmt: skip

    async def subscribe(self, conn: Conn, session: Session, req: UserRequest) -> None:
        accounts = session.rec.key.accounts if session.rec.key.role == "trader" else frozenset()
        if not accounts:
            conn.control(error(NOT_ALLOWED, "this key has no accounts to follow", req.id))
            return
        self.unfollow(conn, session)
        sub = session.sub = UserSub(accounts, live=req.since is None)
        for a in accounts:
            self.followers.setdefault(a, set()).add(conn)
        m.SUBSCRIPTIONS.labels("user").set(sum(len(c) for c in self.followers.values()))
        ack = {"type": "subscribed", "channel": "user", "accounts": sorted(accounts),
               "id": req.id}  # fmt: skip
        sub.pos = {short(k): entry_seq(v) for k, v in self.pos.items() if _user_stream(k)}
        sub.safe = dict(sub.pos)
        if req.since is None:
            conn.control({**ack, "since": dict(sub.pos)})
            return
        sub.pos.update(req.since)
        sub.safe = dict(sub.pos)
        try:
            resumed, sent = await self.replay(conn, sub, req.since)
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("user replay: %s", exc)
            self.unfollow(conn, session)
            conn.control(error(GATEWAY_UNAVAILABLE, "Redis does not answer: try again", req.id))
            return
        conn.control({**ack, "since": dict(req.since), "resumed": resumed, "replayed": sent})
        self.go_live(conn, sub)

    async def replay(self, conn: Conn, sub: UserSub, since: Mapping[str, int]
                     ) -> tuple[bool, int]:  # fmt: skip
        """The entries after ``since`` (src → seq) up to where the gateway has read, through
        the feed for this subscription's accounts; False when a stream was more than
        ``REPLAY_MAX`` behind or unknown (the client may have missed messages: said)."""
        resumed, sent = True, 0
        bounds = {k: v for k, v in self.pos.items() if _user_stream(k)}
        order = sorted(since, key=lambda s: "oeb".index(s[0]) if s[:1] in "oeb" else 3)
        for src in order:
            key = long(src)
            if key is None or key not in bounds:
                resumed = False
                continue
            start, n = f"{since[src]}-0", 0
            while n < REPLAY_MAX:
                page = await self.r.xrange(key, min=f"({start}", max=bounds[key],
                                           count=REPLAY_PAGE)  # fmt: skip
                if not page:
                    break
                n += len(page)
                start = page[-1][0]
                for account, msg in self._replayed(key, page):
                    if account not in sub.accounts:
                        continue
                    if sub.held is None:  # fell behind meanwhile: told to resubscribe
                        return False, sent
                    self._push(conn, sub, msg, json.dumps(msg, separators=(",", ":")))
                    sent += 1
            resumed = resumed and n < REPLAY_MAX
        return resumed, sent

    def _replayed(self, key: str, page: list[Any]) -> list[tuple[str, dict[str, Any]]]:
        now = time.monotonic()
        if key.startswith(ORDERS_PREFIX):
            return self.feed.orders(key, page, now, live=False)
        if key.startswith(EVENTS_PREFIX):
            return self.feed.events(key, page, now, live=False)
        return self.feed.balances(key, page, now, live=False)

    def go_live(self, conn: Conn, sub: UserSub) -> None:
        """The live messages that came during the replay (those it did not send), then live."""
        if sub.held is None:
            return
        held, sub.held, sub.live = sub.held, [], True
        for body, msg in held:
            if msg["src_seq"] > sub.pos.get(msg["src"], -1):
                self.send(conn, sub, msg, body)

    def unfollow(self, conn: Conn, session: Session) -> None:
        if session.sub is None:
            return
        for a in session.sub.accounts:
            conns = self.followers.get(a)
            if conns is not None:
                conns.discard(conn)
                if not conns:
                    del self.followers[a]
        session.sub = None
        m.SUBSCRIPTIONS.labels("user").set(sum(len(c) for c in self.followers.values()))

    def drop(self, conn: Conn) -> None:
        """A connection gone (or logging in again): unfollow; its cancel-on-disconnect."""
        session = self.sessions.pop(conn, None)
        if session is None:
            return
        self.unfollow(conn, session)
        if session.cod:
            self.disarm(session.rec)

    # -- cancel-on-disconnect ---------------------------------------------------------------------

    def arm(self, rec: ApiKeyRecord) -> None:
        """One more connection of this key asks for cancel-on-disconnect: the first starts
        the dead-man heartbeat (the switch also fires if this gateway itself dies)."""
        kid = rec.key.key_id
        n, task = self.cod.get(kid, (0, None))
        if task is None:
            task = asyncio.get_running_loop().create_task(self._heartbeat(rec))
        self.cod[kid] = (n + 1, task)

    def disarm(self, rec: ApiKeyRecord) -> None:
        """One fewer: the last one gone cancels the key's orders now."""
        kid = rec.key.key_id
        n, task = self.cod.get(kid, (0, None))
        if n > 1:
            self.cod[kid] = (n - 1, task)  # type: ignore[assignment]
            return
        self.cod.pop(kid, None)
        if task is not None:
            task.cancel()
        if not self.closing:  # (a gateway stopping leaves the switch armed: it fires unless
            # the client logs in again, on another gateway, within the timeout)
            asyncio.get_running_loop().create_task(self._cancel_all(rec))

    def close(self) -> None:
        """The gateway stops: connections that drop now do not cancel at once."""
        self.closing = True

    async def _heartbeat(self, rec: ApiKeyRecord) -> None:
        client = self.rest.client_for(rec)
        while True:
            for account in sorted(rec.key.accounts):
                try:
                    await client.cancel_after(self.cod_timeout_ms, account=account)
                except Exception as exc:  # noqa: BLE001 - the cluster away: next beat
                    log.warning("cancel-on-disconnect heartbeat %s: %s", account, exc)
            await asyncio.sleep(self.cod_timeout_ms / 3000)

    async def _cancel_all(self, rec: ApiKeyRecord) -> None:
        client = self.rest.client_for(rec)
        for account in sorted(rec.key.accounts):
            try:
                await client.cancel_after(0, account=account)  # (a later order stays)
                done = await client.cancel_all(account=account)
                m.USER_COD.inc()
                log.info("cancel-on-disconnect %s %s: %s", rec.key.key_id, account, done)
            except Exception as exc:  # noqa: BLE001 - the switch still fires in time
                log.warning("cancel-on-disconnect %s: %s", account, exc)


def _user_stream(key: str) -> bool:
    return key.startswith((ORDERS_PREFIX, BALANCES_PREFIX, EVENTS_PREFIX))

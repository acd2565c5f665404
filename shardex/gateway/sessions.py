"""Browser sessions of the gateway's web page (pure: the time is given, tokens come from the
caller's ``secrets``).

A session is made only by a signed login (``POST /v1/session``, verified like any signed REST
request), so the API secret never crosses the wire: the page signs in the browser. The session
is then two random tokens: the cookie (HttpOnly: the page's script cannot read it) and the CSRF
token (the page sends it in a header on every request; another site's page can make the
browser send the cookie, never the header). Sessions live in memory only: a gateway restart
ends them all (log in again). They expire after ``idle`` seconds unused and ``max_age`` after
login whatever happens; at most ``limit`` exist (the oldest go first).
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from dataclasses import dataclass

IDLE = 15 * 60  # seconds a session lives unused
MAX_AGE = 8 * 3600  # seconds a session lives at most
LIMIT = 10_000  # sessions held at once


@dataclass
class Session:
    """One logged-in browser: the API key it acts with and its CSRF token."""

    key_id: str
    csrf: str
    created: float
    used: float


def _digest(token: str) -> str:
    """What the store keys a session by: a hash of its cookie (a dump of the store's keys
    is not a list of cookies)."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class SessionStore:
    """The sessions, oldest-used first, bounded and expiring."""

    def __init__(self, idle: float = IDLE, max_age: float = MAX_AGE, limit: int = LIMIT) -> None:
        self.idle, self.max_age, self.limit = idle, max_age, limit
        self.sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self.sessions)

    def create(self, key_id: str, cookie: str, csrf: str, now: float) -> Session:
        """A new session for ``key_id`` under ``cookie`` (both tokens random, made by the
        caller); the oldest session goes when the store is full."""
        self.expire(now)
        sess = Session(key_id, csrf, now, now)
        self.sessions[_digest(cookie)] = sess
        while len(self.sessions) > self.limit:
            self.sessions.popitem(last=False)
        return sess

    def get(self, cookie: str, now: float) -> Session | None:
        """The live session of ``cookie`` (its use extends it), or None."""
        d = _digest(cookie)
        sess = self.sessions.get(d)
        if sess is None:
            return None
        if self._dead(sess, now):
            del self.sessions[d]
            return None
        sess.used = now
        self.sessions.move_to_end(d)
        return sess

    def alive(self, cookie: str, now: float) -> Session | None:
        """The live session of ``cookie`` without extending it (a WebSocket that merely stays
        open is not a use: the session expires as it would without it)."""
        sess = self.sessions.get(_digest(cookie))
        return None if sess is None or self._dead(sess, now) else sess

    def drop(self, cookie: str) -> bool:
        """Log out: the session is gone (True if there was one)."""
        return self.sessions.pop(_digest(cookie), None) is not None

    def remaining(self, sess: Session, now: float) -> float:
        """Seconds until ``sess`` expires if it is not used again."""
        return max(0.0, min(sess.used + self.idle, sess.created + self.max_age) - now)

    def expire(self, now: float) -> None:
        """Drop the sessions unused the longest while they are dead (the order is of use)."""
        while self.sessions:
            d, sess = next(iter(self.sessions.items()))
            if not self._dead(sess, now):
                break
            del self.sessions[d]

    def _dead(self, sess: Session, now: float) -> bool:
        return now - sess.used > self.idle or now - sess.created > self.max_age


def csrf_ok(sess: Session, sent: str | None) -> bool:
    """The header matches the session's CSRF token (in constant time)."""
    if sent is None:
        return False
    return hmac.compare_digest(sess.csrf.encode(), sent.encode("utf-8", "replace"))

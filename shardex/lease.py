"""The leader lease of one replicated shard, in Redis (issue 15, phase 1).

Keys, for shard I:

- ``shardex:lease:I``         ``"<epoch>|<node>|<replication endpoint>"``, ``PX`` ttl: the leader
- ``shardex:lease:I:epoch``   the epoch counter (INCR; never below a node's journaled epoch)
- ``shardex:lease:I:isr``     the in-sync set, ``"node,node"``: who may take an expired lease
- ``shardex:lease:I:starts``  hash epoch → the seq its leader started from (divergence checks)

Why a lease and not just "the process is up": a primary that is paused (SIGSTOP, a long GC, a
VM freeze) and resumes must not act as leader once someone else could have taken over. The
holder renews every ~200 ms with a compare-and-refresh, and computes its *local* deadline from
the monotonic clock read *before* the renew was sent: Redis starts its ``PX`` countdown when it
runs the script, which is later, so the local deadline always falls before the Redis expiry
(minus ``margin`` for clock-rate drift). A primary checks that deadline before every reply
flush, so by the time a standby can take the key the old primary has stopped answering.

What this relies on (README "Failover"): one Redis (not a Sentinel/cluster failover, whose
async replication could hand the key to two holders), and clocks that run at about the same
rate. If Redis loses its data (restart without AOF) the ISR key is gone: any node may then
take the lease; the epoch still never goes backwards because each node's journal keeps the
highest epoch it saw and passes it as a floor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

LEASE_USER = "lease"  # the Redis ACL user of the lease (``shardex.redisauth``): lease keys only

_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, 'held'} end
local isr = redis.call('GET', KEYS[3])
if isr and isr ~= '' then
  local ok = false
  for m in string.gmatch(isr, '[^,]+') do if m == ARGV[1] then ok = true end end
  if not ok then return {0, 'not in the in-sync set (' .. isr .. ')'} end
end
local e = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[4])
if e <= floor then e = floor + 1; redis.call('SET', KEYS[2], e) end
redis.call('SET', KEYS[1], e .. '|' .. ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[3])
redis.call('SET', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[4], e, ARGV[5])
return {e, 'ok'}
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_SET_ISR = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def connect(url: str, keys_dir: str | None = None) -> Any:
    """The lease's Redis client, with short timeouts (a slow Redis must not stall the loop).

    In a secure cluster the URL names the ``lease`` user without a password
    (``redis://lease@HOST:PORT/0``, what ``shardex up`` passes) and the password comes from
    ``keys_dir/redis.json``, so it is never on a command line; a URL with a password, or an
    insecure cluster's URL without a user, is used as given. Raises ``RedisAuthError`` when the
    URL names a user whose password cannot be found."""
    import redis

    from shardex.redisauth import resolve_url

    return redis.Redis.from_url(
        resolve_url(url, keys_dir), socket_timeout=0.25, socket_connect_timeout=0.25
    )


def check_access(r: Any) -> str | None:
    """Why this client can never use the lease (wrong credentials, a user without the lease
    commands), or None: usable, or Redis merely unreachable now (the loops retry that)."""
    import redis

    try:
        r.get("shardex:lease:access-check")
    except redis.exceptions.AuthenticationError as exc:
        return f"Redis refused the credentials ({exc})"
    except redis.exceptions.ConnectionError:
        return None  # not up (yet): the standby keeps trying
    except redis.exceptions.ResponseError as exc:  # NOAUTH, NOPERM
        return f"Redis refused the lease's commands ({exc})"
    return None


class LeaseLost(Exception):
    """Redis says someone else holds (or nobody holds) the lease we thought was ours."""


@dataclass(frozen=True)
class Holder:
    epoch: int
    node: str
    endpoint: str


def parse_holder(value: Any) -> Holder | None:
    """A lease value → its holder (None for a missing or garbled value)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    parts = str(value).split("|", 2)
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    return Holder(int(parts[0]), parts[1], parts[2])


class Lease:
    """One node's view of shard ``shard``'s lease: acquire, renew, record the in-sync set.

    ``deadline`` is the monotonic time until which this node may act as leader (0: never).
    """

    def __init__(
        self,
        redis_client: Any,
        shard: int,
        node: str,
        endpoint: str,
        ttl_ms: int = 1000,
        renew_ms: int = 200,
        margin: float = 0.05,
    ) -> None:
        if "|" in node or "," in node or "|" in endpoint:
            raise ValueError("node ids and endpoints may not contain '|' or ','")
        if not 0 < renew_ms * 3 <= ttl_ms:
            raise ValueError("renew at least three times per ttl")
        self.r = redis_client
        self.shard = shard
        self.node = node
        self.endpoint = endpoint
        self.ttl_ms = ttl_ms
        self.renew_s = renew_ms / 1000
        self.margin = margin
        base = f"shardex:lease:{shard}"
        self.keys = (base, base + ":epoch", base + ":isr", base + ":starts")
        self.epoch = 0
        self.value: str | None = None
        self.deadline = 0.0
        self.last_renew = 0.0
        self._acquire = redis_client.register_script(_ACQUIRE)
        self._renew = redis_client.register_script(_RENEW)
        self._set_isr = redis_client.register_script(_SET_ISR)
        self._release = redis_client.register_script(_RELEASE)

    # -- reading -------------------------------------------------------------------------------

    def holder(self) -> Holder | None:
        return parse_holder(self.r.get(self.keys[0]))

    def isr(self) -> list[str]:
        raw = self.r.get(self.keys[2])
        if isinstance(raw, bytes):
            raw = raw.decode()
        return [m for m in (raw or "").split(",") if m]

    def starts(self) -> dict[int, int]:
        raw = self.r.hgetall(self.keys[3])
        return {int(k): int(v) for k, v in raw.items()}

    # -- leading -------------------------------------------------------------------------------

    def try_acquire(self, floor: int, start_seq: int) -> tuple[int, str]:
        """Take the lease if it is free and we may (in the in-sync set, or no set recorded).

        Returns (epoch, "ok") with a new epoch > ``floor``, or (0, why not)."""
        t0 = time.monotonic()
        epoch, why = self._acquire(
            keys=list(self.keys), args=[self.node, self.endpoint, self.ttl_ms, floor, start_seq]
        )
        if isinstance(why, bytes):
            why = why.decode()
        epoch = int(epoch)
        if epoch:
            self.epoch = epoch
            self.value = f"{epoch}|{self.node}|{self.endpoint}"
            self._granted(t0)
        return epoch, why

    def _granted(self, t0: float) -> None:
        self.deadline = t0 + self.ttl_ms / 1000 * (1 - self.margin)
        self.last_renew = t0

    def valid(self, now: float | None = None) -> bool:
        """Whether we may still act as leader (monotonic clock, local deadline)."""
        return self.value is not None and (time.monotonic() if now is None else now) < self.deadline

    def due(self, now: float) -> bool:
        return self.value is not None and now - self.last_renew >= self.renew_s

    def renew(self) -> bool:
        """Compare-and-refresh. True: renewed; False: Redis could not be asked (the deadline
        stays where it was). Raises LeaseLost when Redis says the lease is not ours."""
        if self.value is None:
            raise LeaseLost("no lease held")
        t0 = time.monotonic()
        self.last_renew = t0
        try:
            ok = self._renew(keys=[self.keys[0]], args=[self.value, self.ttl_ms])
        except Exception:  # redis down or slow: keep the old deadline, try again next time
            return False
        if not ok:
            self.value = None
            self.deadline = 0.0
            raise LeaseLost(f"lease of shard {self.shard} epoch {self.epoch} is no longer ours")
        self._granted(t0)
        return True

    def set_isr(self, members: list[str]) -> bool:
        """Record the in-sync set (only while holding the lease). False if Redis could not be
        asked; raises LeaseLost when the lease is not ours."""
        if self.value is None:
            raise LeaseLost("no lease held")
        try:
            keys = [self.keys[0], self.keys[2]]
            ok = self._set_isr(keys=keys, args=[self.value, ",".join(members)])
        except Exception:
            return False
        if not ok:
            self.value = None
            self.deadline = 0.0
            raise LeaseLost(f"lease of shard {self.shard} epoch {self.epoch} is no longer ours")
        return True

    def release(self) -> None:
        """Give the lease up now (clean shutdown: the standby need not wait for the expiry)."""
        if self.value is None:
            return
        value, self.value, self.deadline = self.value, None, 0.0
        try:
            self._release(keys=[self.keys[0]], args=[value])
        except Exception:
            pass

"""The lease in one Redis (the embedded default): Lua scripts, so each step is atomic.

Keys, for lease NAME (an engine shard's index, or ``accounts-J``):

- ``shardex:lease:NAME``         ``"<epoch>|<node>|<replication endpoint>"``, ``PX`` ttl
- ``shardex:lease:NAME:epoch``   the epoch counter (INCR; never below the taker's floor)
- ``shardex:lease:NAME:isr``     the in-sync set, ``"node,node"``: who may take an expired lease
- ``shardex:lease:NAME:starts``  hash epoch -> the seq its leader started from

The token a holder presents is the lease value itself (compare-on-value).
"""

from __future__ import annotations

from typing import Any

from shardex.coord.base import Holder, parse_holder

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


class RedisLeaseStore:
    """One lease in Redis; ``r`` a redis-py client (or the simulator's twin of one)."""

    def __init__(self, r: Any, name: str) -> None:
        self.r = r
        base = f"shardex:lease:{name}"
        self.keys = (base, base + ":epoch", base + ":isr", base + ":starts")
        self._acquire = r.register_script(_ACQUIRE)
        self._renew = r.register_script(_RENEW)
        self._set_isr = r.register_script(_SET_ISR)
        self._release = r.register_script(_RELEASE)

    def effective_ttl_ms(self, ttl_ms: int) -> int:
        """Redis keeps millisecond expiries: the ttl asked for."""
        return ttl_ms

    def acquire(self, node: str, endpoint: str, ttl_ms: int, floor: int,
                start_seq: int) -> tuple[int, str, Any]:  # fmt: skip
        epoch, why = self._acquire(keys=list(self.keys),
                                   args=[node, endpoint, ttl_ms, floor, start_seq])  # fmt: skip
        if isinstance(why, bytes):
            why = why.decode()
        epoch = int(epoch)
        return epoch, why, (f"{epoch}|{node}|{endpoint}" if epoch else None)

    def renew(self, token: Any, ttl_ms: int) -> bool:
        return bool(self._renew(keys=[self.keys[0]], args=[token, ttl_ms]))

    def set_isr(self, token: Any, members: list[str]) -> bool:
        keys = [self.keys[0], self.keys[2]]
        return bool(self._set_isr(keys=keys, args=[token, ",".join(members)]))

    def release(self, token: Any) -> None:
        self._release(keys=[self.keys[0]], args=[token])

    def holder(self) -> Holder | None:
        return parse_holder(self.r.get(self.keys[0]))

    def holder_ttl(self) -> tuple[Holder | None, int]:
        """One round trip: the holder and its ``PTTL``."""
        pipe = self.r.pipeline(transaction=False)
        pipe.get(self.keys[0])
        pipe.pttl(self.keys[0])
        value, pttl = pipe.execute()
        return parse_holder(value), int(pttl)

    def isr(self) -> list[str]:
        raw = self.r.get(self.keys[2])
        if isinstance(raw, bytes):
            raw = raw.decode()
        return [m for m in (raw or "").split(",") if m]

    def starts(self) -> dict[int, int]:
        raw = self.r.hgetall(self.keys[3])
        return {int(k): int(v) for k, v in raw.items()}

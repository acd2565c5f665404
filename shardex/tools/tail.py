"""``shardex tail``: follow one pair's trades from Redis (``shardex:trades:SYMBOL``).

Each trade entry carries ``ts``, its exchange time (ms since the Unix epoch, UTC, given by the
engine shard when it journaled the trade's batch: ``shardex.timemarks``), passed through as an
int. Entry IDs are ``<seq>-0`` (seq-derived, for exactly-once), so an ID's "ms" part is a
sequence number, not a clock. Each line also gets ``read_at``, the UTC time this reader received
it (entries written by a bridge older than exchange time have no ``ts``).

Credentials (``connect``): a secure cluster's Redis has ACL users; tail reads as ``reader``, whose
password it finds in ``KEYS_DIR/redis.json`` when no ``--redis-url`` is given. A ``--redis-url``
is used as given (``redis://user:pass@…``, ``rediss://`` for TLS), and one that names a user
without a password gets it from the keys dir. The URL is only ever shown masked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

INT_FIELDS = ("trade_id", "seq", "shard", "ts")


class TailError(Exception):
    """A reason tail cannot go on (unknown symbol, Redis unreachable); one line."""


def tail_url(redis_url: str | None, default_url: str, keys_dir: str | Path | None) -> str:
    """The URL tail connects to (with credentials: never print it, see ``mask_url``).

    ``redis_url`` (``--redis-url``) wins; else ``default_url`` (the layout's embedded server) as
    user ``reader`` when ``keys_dir`` holds the cluster's Redis credentials, else as is (an
    insecure cluster's Redis has no users).
    """
    from shardex.redisauth import REDIS_FILE, RedisAuthError, RedisUsers, resolve_url

    try:
        if redis_url:
            return resolve_url(redis_url, keys_dir)
        if keys_dir is not None and (Path(keys_dir) / REDIS_FILE).exists():
            return RedisUsers.load(keys_dir).url(default_url, "reader")
    except RedisAuthError as exc:
        raise TailError(str(exc)) from None
    return default_url


def connect(redis_url: str | None, default_url: str, keys_dir: str | Path | None) -> Any:
    """A redis-py client for tail (see ``tail_url``); nothing is sent until first use."""
    import redis

    return redis.Redis.from_url(
        tail_url(redis_url, default_url, keys_dir), decode_responses=True, socket_connect_timeout=3
    )


def redis_error(exc: Exception) -> TailError:
    """A redis-py error as one line saying what to do (never the URL or a password)."""
    import redis

    if isinstance(exc, redis.exceptions.AuthenticationError):
        return TailError(
            f"Redis refused the credentials ({exc}): tail reads as user reader with the password "
            "in KEYS_DIR/redis.json (--data-dir/--keys-dir), or give --redis-url "
            "redis://USER:PASSWORD@HOST:PORT/0"
        )
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return TailError(f"Redis refused a read (ACL): {exc}")
    return TailError(f"cannot read from Redis: {exc}")


def stream_key(symbol: str) -> str:
    return f"shardex:trades:{symbol}"


def iso_utc(t: float) -> str:
    """2026-11-24T10:00:00.123Z (ms precision, UTC)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def trade_record(entry_id: str, fields: dict[str, str], symbol: str, read_at: float) -> dict:
    """One stream entry as the public JSON: ints as ints, money as decimal strings, read_at."""
    rec: dict[str, Any] = {"id": entry_id, "symbol": symbol}
    for k, v in fields.items():
        rec[k] = int(v) if k in INT_FIELDS and v.lstrip("-").isdigit() else v
    rec["read_at"] = iso_utc(read_at)
    return rec


def trade_line(rec: dict) -> str:
    """One human line: time, side, qty @ price, orders, trade id and seq."""
    return (
        f"{rec['read_at'][11:23]} {rec['symbol']} {rec.get('taker_side', '?'):<4} "
        f"{rec.get('qty', '?'):>14} @ {rec.get('price', '?'):<14} taker {rec.get('taker')} "
        f"maker {rec.get('maker')} #{rec.get('trade_id')} seq {rec.get('seq')}"
    )


def follow(
    r: Any,
    symbol: str,
    known: Collection[str],
    from_start: bool = False,
    count: int = 0,
    on_wait: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> Iterator[dict]:
    """Yield ``symbol``'s trades as records (see ``trade_record``), live (XREAD BLOCK).

    An unknown symbol (not in ``known`` and no stream in Redis) raises TailError at once instead
    of waiting forever; a known one without trades yet calls ``on_wait`` with a message.
    """
    import redis

    key = stream_key(symbol)
    try:
        length = r.xlen(key) if r.exists(key) else None
    except (redis.exceptions.ConnectionError, redis.exceptions.ResponseError) as exc:
        raise redis_error(exc) from None
    if length is None and symbol not in known:
        sample = ", ".join(sorted(known)[:8])
        raise TailError(
            f"unknown symbol {symbol!r}: no market of that name (known: {sample}; "
            "--markets FILE for custom markets) and no trades in Redis"
        )
    if on_wait is not None and not length:
        on_wait(f"waiting for the first {symbol} trade ({key} is empty); Ctrl-C stops")
    last = "0-0" if from_start else "$"
    seen = 0
    while True:
        try:
            resp = r.xread({key: last}, block=1000, count=1000)
        except (redis.exceptions.ConnectionError, redis.exceptions.ResponseError) as exc:
            raise redis_error(exc) from None
        now = clock()
        for _, entries in resp:
            for entry_id, fields in entries:
                last = entry_id
                seen += 1
                yield trade_record(entry_id, fields, symbol, now)
                if count and seen >= count:
                    return

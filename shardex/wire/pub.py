"""The events PUB stream: the one encoder and the one decoder of a shard's PUB messages.

A PUB message is ``[topic = symbol, msgpack [VERSION, shard, [event, ...]]]`` in seq order; a
replicated shard's leader appends its epoch: ``[VERSION, shard, [event, ...], epoch]`` (a
single-process shard sends the 3-field form). A shard that stamps exchange time (every node
does) sends the 5-field form ``[VERSION, shard, [event, ...], epoch or nil, ts]``: ``ts`` is
the exchange time of every event of the message (ms since the Unix epoch, UTC; a message
never spans two times, ``shardex.timemarks``). Engine shards publish the event tuples of
``shardex.engine.codes``, account shards those of ``shardex.accounts.codes``.

The decoder is total: whatever a peer sends (any msgpack value in any position), it returns
well-formed events or raises ``Malformed`` (a ``ValueError``). The bridge counts what it drops;
tests and tools read the same stream with the same functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shardex.accounts.assets import AssetTable
from shardex.accounts.codes import (
    AE_BALANCE,
    AE_FEES,
    AE_FILL,
    AE_LISTED,
    AE_NAMES,
    AE_RESTRICTED,
)
from shardex.engine.codes import (
    EV_ADL,
    EV_AMENDED,
    EV_CANCELLED,
    EV_FUNDING,
    EV_INDEX,
    EV_LIQUIDATION,
    EV_LISTED,
    EV_MARGIN,
    EV_POSITION,
    EV_TRADE,
    EV_TRIGGERED,
    Event,
)
from shardex.engine.markets import Market
from shardex.wire.envelope import VERSION, packb, unpackb, version_error
from shardex.wire.event_shapes import EVENT_SHAPES, fits_shape
from shardex.wire.index_event import check_index_event
from shardex.wire.layouts import (
    AE_KIND,
    AE_SEQ,
    EV_KIND,
    EV_SEQ,
    EV_SYMBOL,
    PUB_EPOCH,
    PUB_TS,
    RESTRICTED_ACCOUNT,
    RESTRICTED_FLAG,
    RESTRICTED_WIDTH,
)
from shardex.wire.liquidation_event import check_liquidation_event
from shardex.wire.listed import learn_account_listed, learn_listed
from shardex.wire.position_event import check_position_event

MAX_SEQ = (1 << 63) - 1  # stream IDs are 64-bit; anything above is not a seq
MAX_STR = 1024  # chars of any string field of an event (the engine's are ≤ ~300)
MAX_EPOCH = 1 << 63
MAX_TS = (1 << 63) - 1  # (``timemarks.MAX_TS``: the wire cannot import the node's module)

_TRADE_TYPES = tuple(str if c == "s" else int for c in EVENT_SHAPES[EV_TRADE])


class Malformed(ValueError):
    """Input from a shard that is not what the protocol says; the message says what."""


def encode_events(shard: int, events: list[Event], epoch: int | None = None,
                  ts: int | None = None) -> bytes:  # fmt: skip
    """A PUB payload; ``epoch`` (a replicated leader's) is appended only when given, so a
    single-process shard's messages keep the 3-field form older subscribers read; ``ts``
    (the events' exchange time) makes it the 5-field form, epoch nil when there is none."""
    if ts is not None:
        return packb((VERSION, shard, events, epoch, ts))
    if epoch is None:
        return packb((VERSION, shard, events))
    return packb((VERSION, shard, events, epoch))


def decode_envelope(
    payload: Any, shards: int | None = None, what: str = "shard"
) -> tuple[int, Any, int | None]:
    """A PUB payload → (shard, events as sent, the publisher's epoch or None), checked as a
    whole: msgpack, shape, version, a shard index in ``0..shards-1`` (any int when ``shards``
    is None) and an epoch that is a positive int. The events are the caller's to check
    (``check_events`` / ``check_account_events``)."""
    return decode_stamped(payload, shards, what)[:3]  # type: ignore[return-value]


def decode_stamped(
    payload: Any, shards: int | None = None, what: str = "shard"
) -> tuple[int, Any, int | None, int | None]:
    """``decode_envelope`` plus the events' exchange time: (shard, events, epoch or None,
    ts or None: a publisher older than exchange time)."""
    if not isinstance(payload, bytes):
        raise Malformed("payload is not bytes")
    try:
        msg = unpackb(payload)
    except Exception as exc:  # msgpack raises many types for garbage; all mean the same here
        raise Malformed(f"not msgpack ({type(exc).__name__})") from None
    if type(msg) is not tuple or len(msg) not in (3, 4, 5):
        raise Malformed(f"expected [version, {what}, events(, epoch(, ts))]")
    version, shard, events = msg[:PUB_EPOCH]
    reason = version_error(version, " in events")
    if reason is not None:
        raise Malformed(reason)
    if type(shard) is not int or not (shards is None or 0 <= shard < shards):
        known = "an int" if shards is None else f"one of 0..{shards - 1}"
        raise Malformed(f"{what} {str(shard)[:20]!r} is not {known}")
    epoch = msg[PUB_EPOCH] if len(msg) > PUB_EPOCH else None
    if epoch is not None and (type(epoch) is not int or not 0 < epoch < MAX_EPOCH):
        raise Malformed(f"epoch {str(epoch)[:20]!r} is not a positive int")
    ts = msg[PUB_TS] if len(msg) > PUB_TS else None
    if len(msg) > PUB_TS and (type(ts) is not int or not 0 <= ts <= MAX_TS):
        raise Malformed(f"ts {str(ts)[:20]!r} is not a time in ms")
    return shard, events, epoch, ts


def decode_events_epoch(payload: bytes) -> tuple[int, tuple[Event, ...], int | None]:
    """A PUB payload → (shard, events unchecked, epoch or None): for tools and tests that read
    a stream they trust; ``decode_pub_epoch`` is what untrusted readers use."""
    return decode_envelope(payload)


def decode_events(payload: bytes) -> tuple[int, tuple[Event, ...]]:
    """``decode_events_epoch`` without the epoch."""
    return decode_envelope(payload)[:2]  # type: ignore[return-value]


def decode_pub_stamped(
    payload: Any, shards: int, markets: Mapping[str, Market]
) -> tuple[int, list[tuple], int, int | None, int | None]:
    """``decode_pub_epoch`` plus the events' exchange time (None: an older publisher)."""
    shard, events, epoch, ts = decode_stamped(payload, shards, "shard")
    good, bad = check_events(events, markets)
    return shard, good, bad, epoch, ts


def decode_account_pub_stamped(
    payload: Any, shards: int, assets: AssetTable
) -> tuple[int, list[tuple], int, int | None, int | None]:
    """``decode_account_pub_epoch`` plus the events' exchange time (None: an older one)."""
    shard, events, epoch, ts = decode_stamped(payload, shards, "account shard")
    good, bad = check_account_events(events, assets)
    return shard, good, bad, epoch, ts


def decode_pub_epoch(
    payload: Any, shards: int, markets: Mapping[str, Market]
) -> tuple[int, list[tuple], int, int | None]:
    """One engine shard PUB payload → (shard, good events, bad count, epoch or None).

    Raises ``Malformed`` when the message as a whole is unusable (not msgpack, wrong shape or
    version, a shard index outside ``0..shards-1``, a bad epoch); single bad events are dropped
    and counted in ``bad``.
    """
    shard, events, epoch = decode_envelope(payload, shards, "shard")
    good, bad = check_events(events, markets)
    return shard, good, bad, epoch


def decode_pub(
    payload: Any, shards: int, markets: Mapping[str, Market]
) -> tuple[int, list[tuple], int]:
    """``decode_pub_epoch`` without the epoch: (shard, good events, bad count)."""
    return decode_pub_epoch(payload, shards, markets)[:3]  # type: ignore[return-value]


def decode_account_pub_epoch(
    payload: Any, shards: int, assets: AssetTable
) -> tuple[int, list[tuple], int, int | None]:
    """One account shard PUB payload → (j, good events, bad count, epoch or None), as
    ``decode_pub_epoch`` for engine shards."""
    shard, events, epoch = decode_envelope(payload, shards, "account shard")
    good, bad = check_account_events(events, assets)
    return shard, good, bad, epoch


def decode_account_pub(
    payload: Any, shards: int, assets: AssetTable
) -> tuple[int, list[tuple], int]:
    """``decode_account_pub_epoch`` without the epoch: (j, good events, bad count)."""
    return decode_account_pub_epoch(payload, shards, assets)[:3]  # type: ignore[return-value]


def _bounded(value: Any) -> bool:
    return type(value) is str and len(value) <= MAX_STR


# kinds whose prices or sizes are formatted with their pair's market (the others: as they are)
_NEEDS_MARKET = frozenset((EV_TRADE, EV_CANCELLED, EV_AMENDED, EV_TRIGGERED))


def check_event(ev: Any, markets: Mapping[str, Market]) -> bool:
    """True if ``ev`` is an engine event tuple the bridge can format and write.

    Its kind's shape first (``shardex.wire.event_shapes``: the description the SDK checks
    too; ``bool`` is not an ``int`` there), then what formatting relies on beyond it: a seq
    that fits a stream ID, bounded strings, a known symbol where prices/sizes need its market.
    """
    if type(ev) is not tuple or not fits_shape(ev):
        return False
    kind, seq = ev[EV_KIND], ev[EV_SEQ]
    if not 0 < seq <= MAX_SEQ or not all(len(v) <= MAX_STR for v in ev if type(v) is str):
        return False
    if kind in _NEEDS_MARKET:
        return ev[EV_SYMBOL] in markets
    if kind == EV_LISTED:  # (a new pair: learnt, so its events that follow are kept)
        return learn_listed(ev, markets)
    if kind == EV_INDEX:  # (kind, seq, symbol, index, mark)
        return check_index_event(ev, markets)
    if kind in (EV_POSITION, EV_MARGIN, EV_FUNDING):  # (a perp pair's: ``position_event``)
        return check_position_event(ev, markets)
    if kind in (EV_LIQUIDATION, EV_ADL):
        return check_liquidation_event(ev, markets)
    return True


def check_events(events: Any, markets: Mapping[str, Market]) -> tuple[list[tuple], int]:
    """A decoded event array → (good events, number of bad ones dropped)."""
    if type(events) is not tuple:
        raise Malformed(f"events must be an array, got {type(events).__name__}")
    good: list[tuple] = []
    append = good.append
    for ev in events:
        # fast path for the bulk (trades): one C-level type comparison, then the values
        if type(ev) is tuple and tuple(map(type, ev)) == _TRADE_TYPES:
            kind, seq, symbol, _, _, taker, maker, side, _ = ev
            if (
                kind == EV_TRADE
                and 0 < seq <= MAX_SEQ
                and symbol in markets
                and 0 <= side <= 1
                and len(taker) <= MAX_STR
                and len(maker) <= MAX_STR
            ):
                append(ev)
                continue
        if check_event(ev, markets):
            append(ev)
    return good, len(events) - len(good)


def check_account_event(ev: Any, assets: AssetTable) -> bool:
    """True if ``ev`` is an account shard event (``shardex.accounts.codes``) the bridge can
    track, and — for the balance and fee events it writes — format: exact types, a known asset,
    no negative amount, bounded strings. Other kinds only need a plausible seq."""
    if type(ev) is not tuple or len(ev) < 2:
        return False
    kind, seq = ev[AE_KIND], ev[AE_SEQ]
    if type(kind) is not int or type(seq) is not int or not 0 < seq <= MAX_SEQ:
        return False
    if kind == AE_BALANCE:
        if len(ev) != 8:
            return False
        _, _, account, asset, avail, held, why, ref = ev
        return (
            all(_bounded(v) for v in (account, why, ref))
            and type(asset) is str
            and asset in assets.units
            and type(avail) is int
            and type(held) is int
            and avail >= 0
            and held >= 0
        )
    if kind == AE_FEES:  # (net of rebates: a shard's ledger may be negative)
        if len(ev) != 4:
            return False
        _, _, asset, total = ev
        return type(asset) is str and asset in assets.units and type(total) is int
    if kind == AE_RESTRICTED:  # (account, restricted): written to the balances stream too
        return (len(ev) == RESTRICTED_WIDTH and _bounded(ev[RESTRICTED_ACCOUNT])
                and type(ev[RESTRICTED_FLAG]) is bool)  # fmt: skip
    if kind == AE_LISTED:  # (a new pair's assets: learnt, so their balances are kept)
        return learn_account_listed(ev, assets)
    if kind == AE_FILL:
        if len(ev) != 10:
            return False
        _, _, account, symbol, oid, ref, role, bps, fee, asset = ev
        return (
            all(_bounded(v) for v in (account, symbol, oid, ref, role))
            and type(asset) is str
            and asset in assets.units
            and type(bps) is int
            and type(fee) is int
        )
    return 0 <= kind < len(AE_NAMES)


def check_account_events(events: Any, assets: AssetTable) -> tuple[list[tuple], int]:
    """A decoded account-shard event array → (good events, number of bad ones dropped)."""
    if type(events) is not tuple:
        raise Malformed(f"events must be an array, got {type(events).__name__}")
    good = [ev for ev in events if check_account_event(ev, assets)]
    return good, len(events) - len(good)

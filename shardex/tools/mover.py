"""``shardex move PAIR --to I``'s coordinator: one pair from its shard to shard I, step by step.

Every step is decided from what the shards say now (``OP_PAIR`` on each engine shard), never
from what this process remembers, so a mover killed at any point is simply run again and
continues where the cluster stands:

1. **hand-off**: the pair's owner (the shard whose ``where`` is ``here``) journals
   ``OP_HANDOFF``; from then on it answers the pair with ``moving`` (retryable). Just before
   it, the pair's resting orders are copied ahead to the target (``shardex.node.precopy``:
   not journaled, the pair trades on), so the hand-off's read carries only the price levels
   changed since.
2. **adoption**: the target journals ``OP_ADOPT`` with the state the hand-off took (read back
   from the source, which keeps it; the target rebuilds it from its copy and the changed
   levels, or, refusing them without a copy, is sent it whole).
3. **publish**: the placement map pins the pair to the target (a newer version: in the
   placement store if one is given, on every account shard, which journals it and forwards
   the pair's new orders and amends there from then on, and on every engine shard, whose
   HELLOs carry it to the routers), so routers send the pair there. Before the hand-off the
   map records the move as in progress (``moving``).

``plan`` is the pure decision (testable with no cluster); ``move_pair`` drives it over an
``AsyncClient`` (admin key on a secure cluster), printing one progress line per step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shardex.client import AsyncClient
from shardex.engine.codes import EV_ADOPTED, EV_MOVED, OP_ADOPT, OP_HANDOFF
from shardex.node.precopy import DELTA, PRECOPY
from shardex.placement.store import Store
from shardex.tools.move_map import MapPublisher, begun, finished, newest
from shardex.tools.shard_ask import MoveError, ask
from shardex.wire.layouts import EV_KIND, EV_SEQ, MOVED_ORDERS, MOVED_TRADE_ID
from shardex.wire.movestate import CHUNK, PACKED, pieces
from shardex.wire.protocol import OP_PAIR

__all__ = ["ADOPT", "HANDOFF", "PUBLISH", "MoveError", "Step", "ask", "move_pair", "plan"]

HANDOFF, ADOPT, PUBLISH = "hand-off", "adoption", "publish"


@dataclass(frozen=True)
class Step:
    """What to do next: ``kind`` (``HANDOFF``, ``ADOPT``, ``PUBLISH``) on shard ``shard``;
    ``source``/``at``: the hand-off (shard, seq) an adoption carries, ``state`` its state."""

    kind: str
    shard: int
    source: int = -1
    at: int = 0
    state: Any = None


def plan(symbol: str, target: int, views: list[dict[str, Any]]) -> Step:
    """The next step of moving ``symbol`` to shard ``target``, from every engine shard's
    ``OP_PAIR`` answer (index i: shard i's). ``MoveError`` when the cluster is in a state no
    step of this move can fix (another move of the pair half done, no owner)."""
    if not 0 <= target < len(views):
        raise MoveError(f"--to {target}: the cluster has engine shards 0..{len(views) - 1}")
    dst = views[target]
    for i, v in enumerate(views):
        if v.get("where") != "moved":
            continue
        if v.get("to") != target:
            later = views[v["to"]]
            if later.get("where") == "moved" or later.get("source_at") == v.get("at"):
                continue  # an older, finished move out of shard i (adopted, maybe moved on)
            to = v["to"]
            raise MoveError(f"{symbol} was handed off by shard {i} to shard {to}, which has "
                            f"not adopted it: finish that move first (--to {to})")
        if (dst.get("source"), dst.get("source_at")) == (i, v.get("at")):
            if dst.get("where") == "here":
                return Step(PUBLISH, target, i, v["at"])
            continue  # (adopted, then handed on again: an older move)
        return Step(ADOPT, target, i, v["at"], v.get("state"))
    owners = [i for i, v in enumerate(views) if v.get("where") == "here"]
    if owners == [target]:
        return Step(PUBLISH, target)
    if len(owners) != 1:
        raise MoveError(f"{symbol}: shards {owners or 'none'} say they own it; expected one")
    return Step(HANDOFF, owners[0])


Say = Callable[[str], None]


async def move_pair(
    client: AsyncClient, symbol: str, target: int, say: Say = print,
    store: Store | None = None, shards: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Move ``symbol`` to engine shard ``target`` (see the module docstring); a summary map.
    ``store``: the placement store to record the move in (None: the shards' maps only);
    ``shards``: the engine shard count (else the router's topology says)."""
    t0 = time.perf_counter()
    n = shards if shards is not None else await _shards(client)
    maps = MapPublisher(client, n, store)
    done: dict[str, Any] = {"symbol": symbol, "to": target}
    views = [await ask(client, i, (OP_PAIR, symbol)) for i in range(n)]
    seen = newest([v.get("placement") for v in views])
    step = plan(symbol, target, views)
    if step.kind == HANDOFF:
        m = await maps.apply(seen, lambda b, s=step.shard: begun(b, symbol, s, target))
        if m is not None:
            seen = m
            say(f"{symbol}: placement v{m.version} records the move {step.shard} -> {target}")
        pre = await _precopy(client, symbol, step.shard, target, say)
        t1 = time.perf_counter()
        ev, state = await _hand_off(client, symbol, step.shard, target, pre)
        done.update(source=step.shard, handoff_seq=ev[EV_SEQ])
        say(f"{symbol}: hand-off journaled by shard {step.shard} at seq {ev[EV_SEQ]} "
            f"({ev[MOVED_ORDERS]} resting orders, last trade id {ev[MOVED_TRADE_ID]}; "
            f"{_ms(t1)})")
        step = Step(ADOPT, target, step.shard, ev[EV_SEQ], state)
    if step.kind == ADOPT:
        t1 = time.perf_counter()
        state = step.state if isinstance(step.state, bytes | tuple) else None
        if state is None:
            state = await _read_state(client, symbol, step)
        read = _ms(t1)
        head = (OP_ADOPT, symbol, step.source, step.at)
        try:
            res = await _adopt(client, target, head, state)
        except MoveError as exc:
            if not (isinstance(state, tuple) and state[0] == DELTA):
                raise
            say(f"{symbol}: shard {target} refused the changes since the pre-copy ({exc}); "
                "sending the whole state")  # fmt: skip
            res = await _adopt(client, target, head, await _read_state(client, symbol, step))
        if res:
            ev = _event(res, EV_ADOPTED)
            say(f"{symbol}: adopted by shard {target} at seq {ev[EV_SEQ]} (the state of shard "
                f"{step.source}'s hand-off at seq {step.at}, read in {read}; {_ms(t1)})")
    t1 = time.perf_counter()
    m = await maps.apply(seen, lambda b: finished(b, symbol, target), first=target,
                         accounts=client.accounts)  # fmt: skip
    where = f"placement v{m.version} pins it to shard {target}" if m else "done"
    say(f"{symbol}: shard {target} owns it; {where} ({_ms(t1)})")
    done["seconds"] = round(time.perf_counter() - t0, 4)
    return done


async def _precopy(client: AsyncClient, symbol: str, source: int, target: int,
                   say: Say) -> int | None:  # fmt: skip
    """The pair's resting orders copied ahead to ``target`` while it trades on at ``source``
    (``shardex.node.precopy``): the source's seq of the copy, or None when there is none
    (an empty book, a copy larger than one request, a shard that predates pre-copies)."""
    t1 = time.perf_counter()
    try:
        view = await ask(client, source, (OP_PAIR, symbol, PRECOPY))
        blob, at = view.get("precopy_packed"), view.get("precopy_at")
        if not isinstance(blob, bytes) or type(at) is not int or len(blob) > CHUNK:
            return None
        await ask(client, target, (OP_ADOPT, symbol, source, at, blob, PRECOPY))
    except MoveError as exc:
        say(f"{symbol}: no pre-copy ({exc})")
        return None
    say(f"{symbol}: resting orders at seq {at} copied ahead to shard {target} "
        f"({len(blob)} bytes; {_ms(t1)})")  # fmt: skip
    return at


async def _hand_off(client: AsyncClient, symbol: str, source: int, target: int,
                    pre: int | None) -> tuple[tuple, Any]:  # fmt: skip
    """The hand-off on ``source``, with the read of the state it takes sent right behind it:
    its ``EV_MOVED`` event and the state's blob (None when the read did not show it: asked
    again by ``_read_state``); after a pre-copy at ``pre``, ``(DELTA, blob)`` when the source
    sent only the levels changed since. The shard answers a read only once the writes before
    it are durable, so the state comes back in the hand-off's round trip, never before it is
    journaled; a read that overtook the hand-off shows no state and costs nothing."""
    handoff = ask(client, source, (OP_HANDOFF, symbol, target))
    asked = (OP_PAIR, symbol, PACKED) if pre is None else (OP_PAIR, symbol, DELTA, pre)
    read = ask(client, source, asked)
    res: Any
    view: Any
    res, view = await asyncio.gather(handoff, read, return_exceptions=True)
    if isinstance(res, BaseException):
        raise res
    ev = _event(res, EV_MOVED)
    ok = isinstance(view, dict) and view.get("where") == "moved" and view.get("at") == ev[EV_SEQ]
    if not ok or not isinstance(view, dict):
        return ev, None
    if isinstance(view.get("state_delta"), bytes):
        return ev, (DELTA, view["state_delta"])
    state = view.get("state_packed")
    return ev, state if isinstance(state, bytes) else None


async def _read_state(client: AsyncClient, symbol: str, step: Step) -> Any:
    """The state of the hand-off ``step`` names, read back from its source (which keeps it):
    one blob, passed on as it came (``shardex.wire.movestate``); a map from a shard that
    predates the blob."""
    source = await ask(client, step.source, (OP_PAIR, symbol, PACKED))
    if source.get("at") != step.at or source.get("where") != "moved":
        raise MoveError(f"{symbol}: shard {step.source} changed under the mover: {source}")
    state = source.get("state_packed")
    if state is None:  # (a shard from before the blob: the state as a map)
        state = (await ask(client, step.source, (OP_PAIR, symbol, True))).get("state")
    return state


async def _adopt(client: AsyncClient, target: int, head: tuple, state: Any) -> Any:
    """The adoption on ``target``: one request, or the blob in pieces when it is larger than
    one (``shardex.wire.movestate``); the answer of the last. ``(DELTA, blob)``: the changes
    since a pre-copy, the blob sent the same way."""
    if isinstance(state, tuple) and state[0] == DELTA:
        state = state[1]
    if not isinstance(state, bytes) or len(state) <= CHUNK:
        return await ask(client, target, (*head, state))
    res = None
    for offset, piece in pieces(state):
        res = await ask(client, target, (*head, piece, offset, len(state)))
    return res


def _ms(t: float) -> str:
    return f"{(time.perf_counter() - t) * 1000:.0f} ms"


async def _shards(client: AsyncClient) -> int:
    info = await client.topology()
    n = info.get("shards") if isinstance(info, dict) else None
    if type(n) is not int or n < 1:
        raise MoveError("the router did not say how many engine shards there are")
    return n


def _event(res: Any, kind: int) -> tuple:
    """The one event of a move write's answer, of ``kind``; ``MoveError`` for a refusal."""
    evs = list(res) if isinstance(res, list | tuple) else []
    if len(evs) != 1 or evs[0][EV_KIND] != kind:
        raise MoveError(f"unexpected answer {evs!r:.300}")
    return tuple(evs[0])

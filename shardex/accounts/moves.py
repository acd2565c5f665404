"""A pair's settlement records travel with it when it moves between engine shards (pure).

With the account tier on, an engine shard's ``SettlementFeed`` knows each live order's account
and open lots (``live``), which the engine's events do not carry; the settlements of a fill on
the target engine shard need them. So the hand-off adds the pair's feed records to the state
it takes (``"feed"``: ``[id, account, open lots]`` per live order, in id order) and the
adoption installs them, both inside the journaled command's application: a replay of either
journal moves them the same way. The holds stay where they are, on the account shards, keyed
by (account, symbol, id): which engine shard settles a fill does not matter to them (each
engine shard's settlements are one (seq, prev) chain of their own).
"""

from __future__ import annotations

from typing import Any

from shardex.accounts.feed import SettlementFeed
from shardex.engine.codes import EV_ADOPTED, EV_MOVED, OP_HANDOFF
from shardex.wire.layouts import CMD_OP, CMD_SYMBOL, EV_KIND, MOVE_STATE


def carry_feed(engine: Any, feed: SettlementFeed, cmd: tuple, out: list[tuple],
               start: int) -> None:  # fmt: skip
    """Apply a hand-off or adoption ``cmd`` to ``engine`` and move the pair's feed records
    out of (hand-off) or into (adoption) ``feed``; nothing moves when the engine rejected it."""
    symbol = cmd[CMD_SYMBOL]
    if cmd[CMD_OP] == OP_HANDOFF:
        engine.apply(cmd, out)
        if len(out) > start and out[start][EV_KIND] == EV_MOVED:
            live = feed.live
            keys = sorted(k for k in live if k[0] == symbol)
            engine.handed[symbol]["feed"] = [[k[1], *live.pop(k)] for k in keys]
        return
    state = cmd[MOVE_STATE] if len(cmd) > MOVE_STATE else None
    engine.apply(cmd, out)
    if len(out) > start and out[start][EV_KIND] == EV_ADOPTED and isinstance(state, dict):
        for oid, account, open_lots in state.get("feed", ()):
            feed.live[(symbol, oid)] = [account, open_lots]

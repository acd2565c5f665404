"""What a journal's pair moves say about the pairs its shard holds (the data dir check's).

A hand-off (``OP_HANDOFF``) takes its pair off the shard: the shard's later commands for it are
``moving`` rejects, which hold no book. An adoption (``OP_ADOPT``) brings one in. So the pairs a
shard holds are its snapshot's books, minus its snapshot's moved pairs, walked through the
records after the snapshot in order (``shardex.datadir.scan_shard_dir``).
"""

from __future__ import annotations

from collections.abc import Collection

from shardex.engine.codes import OP_ADOPT, OP_HANDOFF
from shardex.wire.layouts import CMD_OP, CMD_SYMBOL

_MOVE_OPS = frozenset((OP_HANDOFF, OP_ADOPT))
# the first bytes of a journaled hand-off and adoption (msgpack arrays of 3 and 5 fields): a
# record without either holds no move (a cheap test before decoding it)
MOVE_MARKS = (b"\x93" + bytes((OP_HANDOFF,)), b"\x95" + bytes((OP_ADOPT,)))


def has_move(payload: bytes) -> bool:
    """Whether a journal record may hold a hand-off or an adoption (False: surely none)."""
    return MOVE_MARKS[0] in payload or MOVE_MARKS[1] in payload


def moved(cmd: object, known: Collection[str], pairs: set[str], gone: set[str]) -> bool:
    """Apply ``cmd`` to ``pairs`` (held) and ``gone`` (handed off) if it is a hand-off or an
    adoption of a known pair; whether it was one of the two."""
    if type(cmd) not in (tuple, list) or len(cmd) <= CMD_SYMBOL or cmd[CMD_OP] not in _MOVE_OPS:
        return False
    symbol = cmd[CMD_SYMBOL]
    if type(symbol) is str and symbol in known:
        if cmd[CMD_OP] == OP_HANDOFF:
            pairs.discard(symbol)
            gone.add(symbol)
        else:
            pairs.add(symbol)
            gone.discard(symbol)
    return True

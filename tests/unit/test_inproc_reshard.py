"""``shardex reshard``'s coordinator (``shardex.tools.reshard``) on the real node loops
(``shardex.inproc``): shrink to one shard and grow back, books kept, a reshard that died in the
middle of a move run again, and a finished reshard run again changing nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardex.engine import DEFAULT_MARKETS
from shardex.engine.codes import OP_ADOPT, OP_HANDOFF
from shardex.inproc import InProcCluster
from shardex.metrics import ShardCollector
from shardex.placement import PlacementMap, default_owner
from shardex.placement.store import DirStore
from shardex.tools import mover
from shardex.tools.move_map import MapPublisher, begun
from shardex.tools.mover import MoveError, ask, move_pair
from shardex.tools.reshard import reshard
from shardex.wire import movestate
from shardex.wire.envelope import packb
from shardex.wire.movestate import pack_state, unpack_state
from shardex.wire.protocol import MAX_FRAME, OP_PAIR
from tests.support.inproc import plan as cluster_plan
from tests.support.inproc import run

pytestmark = pytest.mark.timeout(120)

P = "BTC-USD"
ON_ONE = sorted(s for s in DEFAULT_MARKETS if default_owner(s, 2) == 1)


async def _books(c) -> dict[str, int]:
    """Resting orders per pair, from the shard each pair's map says owns it."""
    out = {}
    for i in (0, 1):
        for s in DEFAULT_MARKETS:
            view = await ask(c, i, (OP_PAIR, s))
            if view["where"] == "here":
                out[s] = view["orders"]
    return out


def _check_metrics(cluster: InProcCluster, n: int) -> None:
    """Each of the ``n`` moves counted once on its source and target, with its pause."""
    got: dict[tuple, float] = {}
    for node in cluster.engines:
        for fam in ShardCollector(node.core.stats).collect():
            for sample in fam.samples:
                if sample.name.startswith(("shardex_moves", "shardex_move_")):
                    labels = {k: v for k, v in sample.labels.items() if k != "shard"}
                    key = (sample.name, *sorted(labels.items()))
                    got[key] = got.get(key, 0) + sample.value
    done = {k[2][1]: v for k, v in got.items() if k[0] == "shardex_moves_total" and
            k[1] == ("outcome", "done")}  # fmt: skip
    assert done == {"handoff": n, "adopt": n}, got
    pauses = sum(v for k, v in got.items() if k[0] == "shardex_move_pause_seconds_count")
    assert pauses == n, got
    refused = sum(v for k, v in got.items() if k[0] == "shardex_moves_total" and
                  k[1] == ("outcome", "refused"))  # fmt: skip
    assert refused == 0, got


def test_shrink_then_grow_back_keeps_every_book_and_resumes_after_a_crash(tmp_path: Path) -> None:
    assert ON_ONE, "the default markets leave shard 1 empty: pick other pairs"
    lines: list[str] = []
    store = DirStore(tmp_path)

    async def body(cluster: InProcCluster) -> None:
        async with cluster.client(account="al") as c:
            for s in DEFAULT_MARKETS:
                for k in range(2):
                    assert (await c.place(s, "buy", "1", str(50 + k), id=f"{s}-{k}")).ok
            before = await _books(c)
            shrunk = await reshard(c, 1, say=lines.append, store=store)
            assert {m.symbol for m in shrunk.moves} == set(ON_ONE)
            assert shrunk.emptied == [1]
            assert await _books(c) == before
            views = [await ask(c, 1, (OP_PAIR, s)) for s in DEFAULT_MARKETS]
            assert all(v["where"] != "here" for v in views)  # shard 1 holds no pair
            # a reshard back to 2 dies after the first pair's hand-off (map says: moving)
            first = ON_ONE[0]
            pub = MapPublisher(c, 2, store)
            await pub.apply(store.load(), lambda b: begun(b, first, 0, 1))
            await ask(c, 0, (OP_HANDOFF, first, 1))
            lines.clear()
            grown = await reshard(c, 2, say=lines.append, store=store)
            assert grown.moves[0].resumed and grown.moves[0].symbol == first
            assert {m.symbol for m in grown.moves} == set(ON_ONE)
            assert await _books(c) == before
            assert (await c.place(first, "sell", "1", "51", id="x", account="bo")).events[-1][
                "ev"] == "trade"  # the moved book trades on its new shard  # fmt: skip
            again = await reshard(c, 2, say=lines.append, store=store)
            assert again.moves == ()
            n = len(shrunk.moves) + len(grown.moves)
            _check_metrics(cluster, n)

    run(cluster_plan(2, data_dir=str(tmp_path)), body)
    stored = store.load()
    assert isinstance(stored, PlacementMap) and not stored.moving
    assert all(stored.owner(s) == default_owner(s, 2) for s in DEFAULT_MARKETS)
    assert any(line.startswith("[1/") for line in lines), lines
    assert any("resharded to 2 shard(s)" in line for line in lines), lines


def test_a_book_larger_than_a_frame_moves_and_a_bad_state_blob_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The adoption used to carry the book as one msgpack request: past the router's frame
    limit (1 MiB) the move failed with ``frame too large``. The state now travels as one
    compressed blob (``shardex.wire.movestate``), in pieces when it is larger than one
    request (pieces of 4 KiB here, so a test-sized book takes several); a blob that is not
    one, and a piece out of order, are refused."""
    n, pad = 12_000, "x" * 48  # ~1.4 MB of msgpack state (long order ids)
    monkeypatch.setattr(movestate, "CHUNK", 4096)
    monkeypatch.setattr(mover, "CHUNK", 4096)

    async def body(cluster: InProcCluster) -> None:
        src = default_owner(P, 2)
        async with cluster.client(account="al") as c:
            cmds = [c.order(P, "buy", "1", str(1 + k % 40), id=f"{pad}{k}", account=f"{pad}a")
                    for k in range(n)]  # fmt: skip
            assert all(r.ok for r in await c.submit_many(cmds, batch=500, window=4))
            assert (await ask(c, src, (OP_PAIR, P)))["orders"] == n
            await move_pair(c, P, 1 - src, say=lambda _line: None, shards=2)
            assert (await ask(c, 1 - src, (OP_PAIR, P)))["orders"] == n
            handed = (await ask(c, src, (OP_PAIR, P, True)))["state"]  # (as a map: too large)
            assert len(packb(handed)) > MAX_FRAME
            with pytest.raises(MoveError, match="unreadable pair state"):
                await ask(c, src, (OP_ADOPT, "ETH-BTC", 1 - src, 1, b"not a state"))
            with pytest.raises(MoveError, match="out of order"):
                await ask(c, src, (OP_ADOPT, "ETH-BTC", 1 - src, 1, b"xx", 4096, 9000))
            blob = pack_state(handed)
            assert len(blob) > 2 * 4096  # (it went in pieces)

    run(cluster_plan(2, data_dir=str(tmp_path)), body)


def test_a_state_that_fits_one_request_travels_uncompressed() -> None:
    """zlib cost the pair's pause ~5-10 ms at 10,000 orders for bytes that fit one request
    anyway: a state up to ``CHUNK`` is plain msgpack, a larger one zlib'd; both read back."""
    small = {"bids": [("o1", "al", 1, 1, 0, False, 0, 1)] * 10, "trade_id": 3}
    assert pack_state(small) == packb(small)
    large = {"bids": [(f"o{k}", "al", 1, 1, 0, False, 0, 1) for k in range(80_000)]}
    blob = pack_state(large)
    assert blob[:1] == b"\x78" and len(blob) < len(packb(large))  # (zlib)
    assert len(packb(large)) > movestate.CHUNK
    for state in (small, large):
        assert unpack_state(pack_state(state))["bids"][0][0] == state["bids"][0][0]


def test_a_state_blob_is_bounded_when_inflated(monkeypatch: pytest.MonkeyPatch) -> None:
    blob = pack_state({"bids": [("x" * 40, "al", 1, 1, 0, False, 0, 1)] * 1000})
    assert unpack_state(blob)["bids"][0][0] == "x" * 40
    monkeypatch.setattr(movestate, "MAX_STATE", 1000)
    with pytest.raises(ValueError, match="larger than allowed"):
        unpack_state(blob)
    with pytest.raises(ValueError, match="unreadable"):
        unpack_state(blob[:-5])

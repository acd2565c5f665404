"""The placement map's pure core, its data-dir store and the rebuild from scanned journals."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import pytest

from shardex.engine import DEFAULT_MARKETS
from shardex.placement import (
    DirStore,
    PlacementMap,
    RebuildError,
    StoreError,
    default_owner,
    initial,
    placed,
    rebuild,
)

SYMBOLS = [f"P{i}-USD" for i in range(2000)]


def test_default_spreads_pairs_evenly_over_shards() -> None:
    counts = [0] * 4
    for s in SYMBOLS:
        counts[default_owner(s, 4)] += 1
    assert min(counts) > len(SYMBOLS) / 4 * 0.8, counts  # within 20 % of an even share


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_growing_by_one_shard_moves_about_one_in_n_plus_one_and_only_to_the_new_one(n: int) -> None:
    moved = [s for s in SYMBOLS if default_owner(s, n) != default_owner(s, n + 1)]
    assert all(default_owner(s, n + 1) == n for s in moved)  # nothing moves between old shards
    share = len(moved) / len(SYMBOLS)
    assert abs(share - 1 / (n + 1)) < 0.05, share


def test_default_is_stable_for_str_and_bytes() -> None:
    assert [default_owner(s, 5) for s in SYMBOLS[:50]] == [
        default_owner(s.encode(), 5) for s in SYMBOLS[:50]
    ]
    assert default_owner("BTC-USD", 1) == 0


def test_pins_override_the_default_and_every_change_steps_the_version() -> None:
    m = initial(3)
    sym = next(s for s in SYMBOLS if m.owner(s) != 2)
    pinned = m.with_pin(sym, 2)
    assert (pinned.version, pinned.owner(sym), pinned.owner(sym.encode())) == (1, 2, 2)
    assert m.owner(sym) != 2  # the old map is unchanged (immutable)
    back = pinned.without_pin(sym)
    assert (back.version, back.owner(sym)) == (2, m.owner(sym))
    grown = back.with_shards(4)
    assert (grown.version, grown.shards) == (3, 4)
    moving = grown.with_moving({sym: (0, 3)})
    assert (moving.version, dict(moving.moving)) == (4, {sym: (0, 3)})
    with pytest.raises(ValueError):
        pinned.with_pin(sym, 3)  # no shard 3 of 3
    with pytest.raises(ValueError):
        m.with_pin(sym, 2).with_shards(2)  # shrinking under a pin: move the pair first


def test_wire_round_trip_through_msgpack_and_json() -> None:
    m = initial(4).with_pin("BTC-USD", 3).with_moving({"ETH-USD": (1, 2)})
    for codec in (msgpack.packb, json.dumps):
        raw = codec(m.to_wire())
        back = PlacementMap.from_wire(msgpack.unpackb(raw) if isinstance(raw, bytes)
                                      else json.loads(raw))  # fmt: skip
        assert back == m and back.owner("BTC-USD") == 3


@pytest.mark.parametrize(
    "bad",
    [None, [], {"version": -1, "shards": 2}, {"version": 0, "shards": 0},
     {"version": 0, "shards": 2, "pins": {"X": 2}}, {"version": 0, "shards": 2, "pins": []},
     {"version": "1", "shards": 2}, {"version": 0, "shards": 2, "moving": {"X": [0]}}],
)  # fmt: skip
def test_from_wire_refuses_malformed_maps(bad: object) -> None:
    with pytest.raises(ValueError):
        PlacementMap.from_wire(bad)


def test_dir_store_compare_and_set(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    assert store.load() is None
    m1 = initial(2).with_pin("BTC-USD", 1)
    assert store.compare_and_set(None, m1)
    assert store.load() == m1
    assert not store.compare_and_set(None, m1.with_pin("ETH-USD", 0))  # base is not current
    m2 = m1.with_pin("ETH-USD", 0)
    assert store.compare_and_set(1, m2)
    assert not store.compare_and_set(1, m2.with_pin("X", 1))  # a racer from the same base loses
    assert store.load() == m2
    assert not list(tmp_path.glob(".placement.json.*"))  # no temporary file left behind
    with pytest.raises(ValueError):
        store.compare_and_set(2, m1)  # a new map must have a higher version


def test_dir_store_refuses_a_torn_file(tmp_path: Path) -> None:
    (tmp_path / "placement.json").write_text('{"version": 3, "sha')
    with pytest.raises(StoreError, match="placement.json"):
        DirStore(tmp_path).load()


@dataclass
class Held:
    index: int
    pairs: set[str] = field(default_factory=set)


def _crc_era(symbols: list[str], n: int) -> list[Held]:
    """Directories as ``crc32(symbol) % n`` placed the pairs (before the map)."""
    dirs = [Held(i) for i in range(n)]
    for s in symbols:
        dirs[zlib.crc32(s.encode()) % n].pairs.add(s)
    return dirs


def test_rebuild_pins_every_pair_where_its_journal_is_when_the_count_grows() -> None:
    found = placed(_crc_era(SYMBOLS[:64], 2))
    m = rebuild(initial(3), 3, found)
    assert m.version == 1 and m.shards == 3
    assert all(m.owner(s) == i for s, i in found.items())
    assert set(m.pins) == {s for s, i in found.items() if default_owner(s, 3) != i}
    new = SYMBOLS[64:200]
    assert {m.owner(s) for s in new} == {0, 1, 2}  # new pairs take the default, shard 2 too
    assert rebuild(m, 3, found) is m  # nothing to change: same map, same version


def test_rebuild_refuses_a_pair_in_a_directory_beyond_the_count_and_a_pair_in_two() -> None:
    dirs = _crc_era(SYMBOLS[:64], 3)
    with pytest.raises(RebuildError, match="shard-2"):
        rebuild(initial(2), 2, placed(dirs))
    dirs[0].pairs.add(next(iter(dirs[1].pairs)))
    with pytest.raises(RebuildError, match="both shard-0 and shard-1"):
        placed(dirs)


def test_rebuild_lets_the_journals_win_over_a_stale_pin() -> None:
    m = initial(2).with_pin("BTC-USD", 0)
    out = rebuild(m, 2, {"BTC-USD": 1})
    assert out.owner("BTC-USD") == 1 and out.version == m.version + 1


def test_the_default_keeps_the_default_markets_where_crc32_put_them_under_two_shards() -> None:
    """The hash's key was chosen for it: two-shard data dirs of the default markets written
    before the map need no pin."""
    assert [default_owner(s, 2) for s in DEFAULT_MARKETS] == [
        zlib.crc32(s.encode()) % 2 for s in DEFAULT_MARKETS
    ]

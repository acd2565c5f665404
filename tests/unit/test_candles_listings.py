"""The candles worker learns a pair listed at runtime from the engine shards' market tables
(the router's topology), never changing a pair it knows; a malformed answer teaches nothing."""

from __future__ import annotations

from shardex.candles.worker import CandlesConfig, CandleWorker
from shardex.engine import DEFAULT_MARKETS
from shardex.wire.listed import shard_tables
from shardex.wire.protocol import markets_to_wire

NEW = ["0.01", "0.001", "100000", "1000000000"]


class _NoRedis:
    """The worker is built but never reads in these tests (the learning is Redis-free)."""

    def register_script(self, script: str) -> None:
        return None


def _worker() -> CandleWorker:
    cfg = CandlesConfig(redis_url="redis://unused", markets={"BTC-USD": DEFAULT_MARKETS["BTC-USD"]})
    return CandleWorker(cfg, r=_NoRedis())


def test_a_listed_pair_joins_and_a_known_one_is_never_changed() -> None:
    w = _worker()
    btc = w.markets["BTC-USD"]
    table = {**markets_to_wire({"BTC-USD": btc}), "AAPL-USD": NEW}
    other = {"BTC-USD": ["1", "1", "10", "10"]}  # another grid for a known pair: ignored
    topo = {"topology": [{"markets": other}, {"markets": table}, {"pid": 3}]}
    assert w.learn(shard_tables(topo)) == ["AAPL-USD"]
    assert str(w.markets["AAPL-USD"].tick) == "0.01"
    assert w.markets["BTC-USD"] is btc
    assert w.learn(shard_tables(topo)) == []  # (once)


def test_malformed_tables_teach_nothing() -> None:
    w = _worker()
    for topo in (None, {}, {"topology": "x"}, {"topology": [1, {"markets": {"bad": [1]}}]},
                 {"topology": [{"markets": {"AAPL-USD": ["0", "x", "1", "1"]}}]}):  # fmt: skip
        assert w.learn(shard_tables(topo)) == []
    assert list(w.markets) == ["BTC-USD"]

"""``--durability replicated`` in real processes: the leader replies once its standby acked a
batch and syncs its own journal after; a kill -9 of it under load loses nothing acknowledged
(the standby journaled and synced every acked batch before acking it). Real redis-server,
router and two ``shardex engine --role auto`` replicas (``SHARDEX_DURABILITY`` is read by
both). ~20 CPU s."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.failover import Pair, kill9_primary_under_load_loses_nothing_acked, started_pair
from tests.support.wait import wait_until


@pytest.fixture
def replicated(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SHARDEX_DURABILITY", "replicated")  # (before the pair starts)


@pytest.fixture
def pair(replicated: Any, tmp_path: Any) -> Any:
    with started_pair(tmp_path) as p:
        yield p


def test_replicated_kill9_primary_under_load_loses_nothing_acked(
    pair: Pair,
) -> None:
    name = "r" + pair.wait_leader().rsplit(".r", 1)[1]
    wait_until(lambda: "leads with --durability replicated" in pair.output(name), 30,
               "the leader to say its durability")  # fmt: skip
    kill9_primary_under_load_loses_nothing_acked(pair)

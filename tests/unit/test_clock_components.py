"""Components that are not nodes take their node's clock (``clock: Clock = REAL``) and pace
themselves on it: on a virtual clock a rate limit opens when the clock moves, not when real
time passes, and the first event is reported at once even at virtual time 0."""

from __future__ import annotations

import logging

import pytest

from shardex.clock import VirtualClock
from shardex.node.bridge.metrics import ALERT_EVERY, Alerts
from shardex.node.replication import LOG_EVERY_S, Refusals


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_bridge_alert_lines_are_paced_by_the_bridges_clock(caplog) -> None:
    clock = VirtualClock()
    alerts = Alerts(clock)
    with caplog.at_level(logging.ERROR, logger="shardex.bridge"):
        alerts.alert("0", "lost", "k", "first")
        alerts.alert("0", "lost", "k", "second")  # within ALERT_EVERY: counted, not logged
        clock.advance(ALERT_EVERY)
        alerts.alert("0", "lost", "k", "third")
    assert _lines(caplog) == ["ALERT first", "ALERT third"]


def test_refused_replication_messages_are_logged_on_the_nodes_clock(caplog) -> None:
    clock = VirtualClock()
    refused = Refusals("leader shard-0.r0", clock)
    with caplog.at_level(logging.ERROR, logger="shardex.replica"):
        refused("garbage")
        refused("more garbage")
        clock.advance(LOG_EVERY_S)
        refused("still garbage")
    assert refused.count == 3
    assert len(caplog.records) == 2 and "refused 2 " in _lines(caplog)[1]

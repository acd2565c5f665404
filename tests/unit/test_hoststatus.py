"""``shardex status --hosts FILE``: the hosts file, each process's answer and its host's clock
offset, and the command's wiring (a fake ``fetch``: no sockets; the real HTTP across network
namespaces is in tests/chaos/test_multihost.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from shardex import hoststatus
from shardex.cli import main
from shardex.clock import VirtualClock
from shardex.hoststatus import SKEW_WARN_MS, Topology, ask, judge, lines, load

HOSTS = {"router": "tcp://10.0.0.1:5555",
         "processes": {"router": "http://10.0.0.1:5557/healthz",
                       "engine-0.r1": "http://10.0.0.3:5855/healthz"}}  # fmt: skip


def _file(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "hosts.json"
    path.write_text(json.dumps(doc))
    return path


def test_a_hosts_file_names_the_router_and_every_health_url(tmp_path):
    topo = load(_file(tmp_path, HOSTS))
    assert topo.router == "tcp://10.0.0.1:5555"
    assert topo.processes == HOSTS["processes"]


@pytest.mark.parametrize(("doc", "why"), [
    ({"router": "tcp://x:1"}, 'give "processes"'),
    ({"processes": {"a": "tcp://10.0.0.1:5557"}}, "not an http:// health URL: a"),
    ({"processes": {"a": "http://h:1/healthz"}, "router": 5}, '"router" must be'),
    ([1, 2], 'give "processes"'),
])  # fmt: skip
def test_a_bad_hosts_file_is_refused_saying_why(tmp_path, doc, why):
    with pytest.raises(ValueError, match=why):
        load(_file(tmp_path, doc))
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read the hosts file"):
        load(tmp_path / "junk.json")


def test_the_clock_offset_is_the_answer_minus_the_midpoint_of_our_two_reads():
    row = judge("e", "http://h:1/healthz", 200, {"time_ms": 1_000_600}, 1000.0, 1000.2)
    assert row.offset_ms == pytest.approx(500.0) and row.rtt_ms == pytest.approx(200.0)
    assert row.skewed  # 500 - 100 (half the round trip) > 250
    near = judge("e", "u", 200, {"time_ms": 1_000_100 + SKEW_WARN_MS}, 1000.0, 1000.2)
    assert not near.skewed  # within the bound once the round trip is allowed for
    assert judge("e", "u", 200, {}, 1.0, 1.0).offset_ms is None  # (an older process)


def test_every_process_is_asked_and_a_dead_one_is_a_row_too():
    clock = VirtualClock()
    now_ms = int(clock.time() * 1000)
    answers = {
        "http://10.0.0.1:5557/healthz": (200, {"state": "serving", "pid": 7,
                                               "time_ms": now_ms}),
        "http://10.0.0.3:5855/healthz": (503, {"state": "starting", "reason": "replaying",
                                               "time_ms": now_ms - 2000}),
    }  # fmt: skip

    def get(url: str, timeout: float) -> tuple[int, bytes]:
        if url not in answers:
            raise OSError("timed out")
        code, body = answers[url]
        return code, json.dumps(body).encode()

    topo = Topology(None, {**HOSTS["processes"], "bridge": "http://10.0.0.9:5558/healthz"})
    rows = ask(topo, 1.0, get, clock)
    assert [(r.name, r.code, r.body.get("state")) for r in rows] == [
        ("router", 200, "serving"), ("engine-0.r1", 503, "starting"), ("bridge", 0, None)]
    assert [r.skewed for r in rows] == [False, True, False]
    text = "\n".join(lines(rows))
    assert "CLOCK OFF by -2000 ms" in text and "replaying" in text
    assert "no answer: timed out" in text and "10.0.0.9:5558" in text


def test_status_hosts_prints_every_process_before_the_routers_view(tmp_path, monkeypatch):
    def get(url: str, timeout: float) -> tuple[int, bytes]:
        return 200, json.dumps({"state": "standby", "following": "shard-0.r1"}).encode()

    monkeypatch.setattr(hoststatus, "fetch", get)
    doc = {**HOSTS, "router": "tcp://127.0.0.1:1"}  # (no router there: its view fails)
    args = ["status", "--hosts", str(_file(tmp_path, doc)), "--key", "none", "--timeout", "0.2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "engine-0.r1" in result.output and "following shard-0.r1" in result.output
    assert "tcp://127.0.0.1:1" in result.output  # the router it tried, named in the error
    bad = CliRunner().invoke(main, ["status", "--hosts", str(tmp_path / "missing.json")])
    assert bad.exit_code == 1 and "cannot read the hosts file" in bad.output

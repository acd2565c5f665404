"""``shardex up --prometheus-config FILE --prometheus-reload URL`` (``shardex.cli.prometheus``):
a reshard's rewrite of the scrape config lists the new engine shards, and the Prometheus at URL
is sent ``POST /-/reload`` (a local HTTP server stands in for it here; the process test runs a
real Prometheus)."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from shardex.cli.prometheus import PrometheusConfig, ReloadURLError, reload_url
from shardex.layout import Layout


class _Prometheus(BaseHTTPRequestHandler):
    """Answers ``POST /-/reload`` with the status the test sets, recording each request."""

    status = 200
    seen: list[tuple[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        _Prometheus.seen.append(("POST", self.path))
        body = b"" if self.status == 200 else b"Lifecycle API is not enabled."
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # (quiet)
        pass


@pytest.fixture
def fake_prometheus():
    _Prometheus.seen, _Prometheus.status = [], 200
    server = HTTPServer(("127.0.0.1", 0), _Prometheus)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def _engine_ports(text: str) -> list[int]:
    job = text.split("job_name: shardex-engine", 1)[1].split("job_name:", 1)[0]
    return [int(p) for p in re.findall(r"'127\.0\.0\.1:(\d+)'", job)]


def test_a_reshards_rewrite_lists_the_new_shards_and_reloads_prometheus(
    tmp_path: Path, fake_prometheus: str
) -> None:
    lines: list[str] = []
    cfg = PrometheusConfig(str(tmp_path / "p.yml"), reload_to=reload_url(fake_prometheus),
                           say=lines.append)  # fmt: skip
    one = Layout("127.0.0.1", 46000, 1)
    cfg.write(one)
    assert _engine_ports((tmp_path / "p.yml").read_text()) == [one.shard_metrics_port(0)]
    assert _Prometheus.seen == []  # (the first write is before Prometheus is asked anything)
    three = Layout("127.0.0.1", 46000, 3)
    cfg.rewrite(three)
    assert _engine_ports((tmp_path / "p.yml").read_text()) == [
        three.shard_metrics_port(i) for i in range(3)]  # fmt: skip
    assert _Prometheus.seen == [("POST", "/-/reload")]
    assert lines == [f"Prometheus reloaded {tmp_path / 'p.yml'} (3 engine shard(s))"]
    assert [p.name for p in tmp_path.iterdir()] == ["p.yml"]  # (no temporary file left)


def test_a_prometheus_without_the_lifecycle_api_is_a_warning_that_says_so(
    tmp_path: Path, fake_prometheus: str
) -> None:
    _Prometheus.status = 403
    lines: list[str] = []
    cfg = PrometheusConfig(str(tmp_path / "p.yml"), reload_to=reload_url(fake_prometheus),
                           say=lines.append)  # fmt: skip
    cfg.rewrite(Layout("127.0.0.1", 46000, 2))
    assert len(lines) == 1 and lines[0].startswith("WARNING: Prometheus did not reload")
    assert "HTTP 403" in lines[0] and "--web.enable-lifecycle" in lines[0], lines
    assert len(_engine_ports((tmp_path / "p.yml").read_text())) == 2  # (rewritten anyway)


def test_an_unwritable_config_is_a_warning_and_no_reload(tmp_path: Path) -> None:
    lines: list[str] = []
    cfg = PrometheusConfig(str(tmp_path / "missing" / "p.yml"), reload_to="http://x/-/reload",
                           say=lines.append)  # fmt: skip
    cfg.rewrite(Layout("127.0.0.1", 46000, 2))
    assert len(lines) == 1 and lines[0].startswith("WARNING: cannot rewrite"), lines


def test_the_reload_url() -> None:
    assert reload_url("http://127.0.0.1:9090") == "http://127.0.0.1:9090/-/reload"
    assert reload_url("https://mon/prom/") == "https://mon/prom/-/reload"
    assert reload_url("http://h:9090/-/reload") == "http://h:9090/-/reload"
    for bad in ("127.0.0.1:9090", "ftp://h/", "http://"):
        with pytest.raises(ReloadURLError):
            reload_url(bad)

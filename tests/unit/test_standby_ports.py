"""A standby holds its future ports (``reserve_port``) even when a former leader's own last
connections linger there in TIME_WAIT, as after every restart of a former leader."""

from __future__ import annotations

import errno
import logging
import socket

import pytest

from shardex.node.replica import reserve_port
from tests.support.ports import free_layout


def _time_wait_on(port: int) -> None:
    """Leave a TIME_WAIT connection on 127.0.0.1:``port`` (its server side closes first, as a
    killed leader's PUB does with the bridge's SUB), and no listener."""
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as libzmq's listeners
    lst.bind(("127.0.0.1", port))
    lst.listen()
    cli = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn, _ = lst.accept()
    lst.close()
    conn.close()  # the server side's active close: TIME_WAIT on ``port`` once the client closes
    assert cli.recv(1) == b""  # (its FIN arrived)
    cli.close()


def test_reserve_port_past_time_wait(caplog: pytest.LogCaptureFixture) -> None:
    """Regression: every restart of a former leader as standby warned "cannot hold tcp://…:P
    while standing by … binding it at promotion may fail" (a plain bind refuses a port with
    TIME_WAIT connections) and so left its port unheld."""
    port = free_layout(1).base_port
    _time_wait_on(port)
    plain = socket.socket()
    with pytest.raises(OSError) as exc:  # the situation: a plain bind is refused
        plain.bind(("127.0.0.1", port))
    plain.close()
    assert exc.value.errno == errno.EADDRINUSE
    with caplog.at_level(logging.WARNING, logger="shardex"):
        held = reserve_port(f"tcp://127.0.0.1:{port}")
    assert held is not None and held.getsockname()[1] == port
    assert "cannot hold" not in caplog.text
    held.close()


def test_reserve_port_still_refuses_a_live_listener(caplog: pytest.LogCaptureFixture) -> None:
    port = free_layout(1).base_port
    with socket.socket() as lst:
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as libzmq binds
        lst.bind(("127.0.0.1", port))
        lst.listen()
        with caplog.at_level(logging.WARNING, logger="shardex"):
            assert reserve_port(f"tcp://127.0.0.1:{port}") is None
    assert "cannot hold" in caplog.text

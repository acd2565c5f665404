"""Checks of the option values a user types for a process (endpoints, advertised hosts).

They live with the process descriptions (``shardex.kinds``) because the options' callbacks
use them; ``shardex.cli`` re-exports them.
"""

from __future__ import annotations

import re

import click


class UsageLineError(click.ClickException):
    """A bad option value: one line on stderr (``Error: ...``) and exit code 2, no usage dump."""

    exit_code = 2


_TCP = re.compile(r"^tcp://(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(\d{1,5}|\*)$")


def check_endpoint(value: str, option: str = "--endpoint", allow: tuple[str, ...] = ()) -> str:
    """A ZeroMQ endpoint a user typed: ``tcp://HOST:PORT`` or ``ipc://PATH``, else one line
    naming the option (instead of zmq's traceback from deep inside a socket call)."""
    if value in allow:
        return value
    m = _TCP.match(value)
    ok = (m is not None and (m.group(2) == "*" or 1 <= int(m.group(2)) <= 65535)) or (
        value.startswith("ipc://") and len(value) > len("ipc://")
    )
    if not ok:
        extra = f" or {' / '.join(allow)}" if allow else ""
        raise UsageLineError(
            f"bad endpoint {value!r} for {option}: expected tcp://HOST:PORT "
            f"(e.g. tcp://127.0.0.1:5555) or ipc://PATH{extra}"
        )
    return value


_WILDCARD_HOSTS = ("*", "0.0.0.0", "[::]", "::")


def advertised(endpoint: str, host: str | None, option: str) -> str:
    """The address other hosts reach a bound ``endpoint`` at: its host replaced by ``host``
    (``--advertise``) when given. One line naming the option when the result would be an
    address nobody can connect to (a wildcard host or port), since the standby (lease), the
    routers' topology and the bridge (HELLO) connect to exactly what is advertised."""
    m = _TCP.match(endpoint)
    if m is None:  # ipc://: one host only; advertised as bound
        if host:
            raise UsageLineError(f"--advertise {host} with {option} {endpoint}: an ipc:// "
                                 "endpoint cannot be reached from another host")  # fmt: skip
        return endpoint
    if m.group(2) == "*":
        raise UsageLineError(f"{option} {endpoint}: a random port cannot be advertised; "
                             "give the port")  # fmt: skip
    if host:
        return check_endpoint(f"tcp://{host}:{m.group(2)}", "--advertise")
    if m.group(1) in _WILDCARD_HOSTS:
        raise UsageLineError(
            f"{option} {endpoint} binds every interface, which is no address to connect to: "
            "give --advertise HOST (the address the other hosts reach this one at)"
        )
    return endpoint


def endpoint_cb(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:  # noqa: ARG001
    """An endpoint option's click callback: one endpoint, or several comma-separated routers
    for ``--endpoint``/``--router`` (whose ``none`` means direct clients only)."""
    if value is None:
        return None
    allow = ("none",) if param.name == "router_ep" else ()
    if param.name in ("endpoint", "router_ep") and "," in value:  # several routers
        for ep in value.split(","):
            check_endpoint(ep, param.opts[0])
        return value
    return check_endpoint(value, param.opts[0], allow)



"""How a client command reaches the cluster: the router found by ``shardex.endpoints`` and a
``Client`` whose connection errors come out as one line saying what was tried and why."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NoReturn

import click

from shardex.cli.base import UsageLineError, client_key
from shardex.client import Client, ShardexError
from shardex.endpoints import EndpointsFileError, Found, connection_error, explain, find_router


def find(endpoint: str | None, host: str | None, base_port: int | None) -> Found:
    """The router a client command talks to (shardex.endpoints: flags, then the endpoints file
    ``shardex up`` wrote, then the default layout); a broken endpoints file is one line."""
    try:
        return find_router(endpoint, host, base_port)
    except EndpointsFileError as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:  # a base port the layout cannot have
        raise UsageLineError(f"--base-port: {exc}") from None


@contextlib.contextmanager
def client(
    endpoint: str | None, host: str | None, base_port: int | None, timeout: float,
    key_file: str | None,
) -> Iterator[Any]:
    """A ``Client`` for a command; a connection error comes out naming the endpoint tried,
    where it came from and the likely cause (``shardex.endpoints.explain``)."""
    found = find(endpoint, host, base_port)
    try:
        with Client(found.endpoint, timeout=timeout, key=client_key(key_file)) as c:
            yield c
    except ShardexError as exc:
        if not connection_error(str(exc)):
            raise
        raise click.ClickException(explain(str(exc), found)) from None


def fail(exc: Exception) -> NoReturn:
    """A client error as one line (exit 1)."""
    raise click.ClickException(str(exc)) from exc

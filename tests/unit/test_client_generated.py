"""The blocking client is generated from the asyncio source (scripts/unasync_client.py): the
checked-in ``shardex/client/_sync/client.py`` must be exactly what the generator makes now, so a
change to one flavour's logic cannot land without the other."""

from __future__ import annotations

import ast
import importlib.util
import inspect
from pathlib import Path

from shardex.client import AsyncClient, Client

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "unasync_client.py"


def _generator():
    spec = importlib.util.spec_from_file_location("unasync_client", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_checked_in_sync_client_is_the_generated_one() -> None:
    gen = _generator()
    checked_in = gen.TARGET.read_text(encoding="utf-8")
    assert gen.generated() == checked_in, "stale: run python scripts/unasync_client.py"
    assert gen.main(["--check"]) == 0


def test_generator_notices_an_edit_of_the_asyncio_source(tmp_path: Path) -> None:
    """The check is not vacuous: a changed source makes a different sync client."""
    gen = _generator()
    src = tmp_path / "client.py"
    src.write_text(gen.SOURCE.read_text(encoding="utf-8").replace(
        "await self._sleep(pause)", "await self._sleep(2 * pause)"), "utf-8")
    gen.SOURCE = src
    assert gen.generated() != gen.TARGET.read_text(encoding="utf-8")


def test_both_flavours_have_the_same_methods_and_signatures() -> None:
    """Sync and async expose one API: same public methods, same parameters; every public
    method of ``AsyncClient`` (but the constructor) is a coroutine function."""
    def public(cls: type) -> dict[str, inspect.Signature]:
        names = [n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))]
        return {n: inspect.signature(getattr(cls, n)) for n in names}

    sync, asyn = public(Client), public(AsyncClient)
    assert sync.keys() == asyn.keys()
    for name, sig in sync.items():
        assert list(sig.parameters) == list(asyn[name].parameters), name
    body = ast.parse(inspect.getsource(AsyncClient)).body[0]
    assert isinstance(body, ast.ClassDef)
    own = {
        n.name
        for n in body.body
        if isinstance(n, ast.AsyncFunctionDef) and not n.name.startswith("_")
    }
    assert {"submit_many", "place", "status", "topology", "close", "audit_orders"} <= own
    assert not [n for n in own if not inspect.iscoroutinefunction(getattr(AsyncClient, n))]

"""API keys added while the gateway runs are known at their first request.

Regression: an unknown key id reloaded the whole keys folder at most once a second, so a key
made right after another one's first use (a test's second trader, an operator adding two keys)
was refused ``unknown API key`` for up to a second (test_gateway_user's cancel-on-disconnect
login failed so under load). Now an unknown id reads its own record, if there is one."""

from __future__ import annotations

from pathlib import Path

from shardex.gateway.apikeys import create, load_one
from shardex.gateway.rest_common import Auth


def _key(tmp_path: Path, account: str) -> str:
    return create(tmp_path, tmp_path / f"{account}.key", "trader", [account]).stem


def test_keys_added_one_after_another_are_known_at_once(tmp_path: Path) -> None:
    auth = Auth(str(tmp_path))
    for account in ("a", "b", "c"):
        key_id = _key(tmp_path, account)
        auth.learn(key_id)
        assert key_id in auth.records and key_id in auth.verifier.keys
        assert auth.records[key_id].key.accounts == frozenset({account})


def test_an_unknown_or_hostile_key_id_reads_nothing(tmp_path: Path) -> None:
    _key(tmp_path, "a")
    (tmp_path / "outside.json").write_text("{}")
    for bad in ("ak" + "0" * 16, "../outside", "ak../../x", "", "AK" + "0" * 16, "ak" * 40):
        assert load_one(tmp_path, bad) is None
    auth = Auth(str(tmp_path))
    auth.learn("../outside")
    assert len(auth.records) == 1

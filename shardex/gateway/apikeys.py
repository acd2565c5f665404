"""API keys of the gateway's REST API: an HMAC secret bound to a CURVE key of the key store.

``shardex keys add --api`` issues the CURVE key as usual (role, accounts) and an API key beside
it: ``KEYS_DIR/api/<key id>.json`` (mode 0600) holds the key id, the secret, the role, the
accounts and the CURVE key file. The gateway verifies requests with the secret and sends the
orders with that CURVE key, so the cluster itself still checks that the key acts only for its
accounts (and a revoked CURVE key stops the API key too). The user gets the key id and secret;
the secret is the HMAC key as the ASCII bytes of its hex string.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from shardex.gateway.signing import ApiKey

API_DIR = "api"
KEY_ID = re.compile(r"ak[0-9a-f]{16}")  # what ``create`` makes: nothing else names a file


@dataclass(frozen=True)
class ApiKeyRecord:
    key: ApiKey
    key_file: str  # the CURVE key the gateway acts with for this API key


def create(keys_dir: str | Path, key_file: str | Path, role: str, accounts: list[str]) -> Path:
    """A new API key for the CURVE key at ``key_file``; the path of its record (0600)."""
    folder = Path(keys_dir) / API_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    key_id = "ak" + secrets.token_hex(8)
    rec = {"key_id": key_id, "secret": secrets.token_hex(32), "role": role,
           "accounts": list(accounts), "key_file": str(Path(key_file).resolve())}  # fmt: skip
    path = folder / f"{key_id}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(rec, fh)
    return path


def read(path: str | Path) -> dict[str, object]:
    with open(path) as fh:
        return json.load(fh)


def _record(path: Path) -> ApiKeyRecord | None:
    """The API key at ``path``, None if it is unreadable or broken (skipped, not fatal)."""
    try:
        rec = read(path)
        key = ApiKey(str(rec["key_id"]), str(rec["secret"]).encode("ascii"), str(rec["role"]),
                     frozenset(str(a) for a in rec["accounts"]))  # type: ignore[attr-defined]
        return ApiKeyRecord(key, str(rec["key_file"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def load(keys_dir: str | Path) -> dict[str, ApiKeyRecord]:
    """Every readable API key of the store."""
    out: dict[str, ApiKeyRecord] = {}
    for path in sorted((Path(keys_dir) / API_DIR).glob("*.json")):
        rec = _record(path)
        if rec is not None:
            out[rec.key.key_id] = rec
    return out


def load_one(keys_dir: str | Path, key_id: str) -> ApiKeyRecord | None:
    """The API key ``key_id`` if the store has it (a key added since the last ``load``): one
    file read, and only for an id of the shape ``create`` makes (no path from a request)."""
    if not KEY_ID.fullmatch(key_id):
        return None
    rec = _record(Path(keys_dir) / API_DIR / f"{key_id}.json")
    return rec if rec is not None and rec.key.key_id == key_id else None

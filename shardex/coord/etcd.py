"""The lease and the placement map in etcd (the production option): a consensus store, so a
member lost or a leader change of etcd itself loses no grant, renewal or in-sync-set shrink.

Spoken through etcd's gRPC-JSON gateway (``/v3/...``) with ``etcd3gw`` (a maintained,
synchronous client: the lease renews from a thread of its own; the asyncio clients would need
a loop there, and the gRPC ``etcd3`` is unmaintained and pins an old protobuf). ``etcd3gw``
talks to one member; ``EtcdClient`` tries the next member of the URL when one does not answer.

Keys of lease NAME (prefix ``shardex:lease:NAME``, as in Redis):

- ``P``            ``"<base>|<node>|<endpoint>"``, attached to an etcd lease (TTL, keep-alive).
                   Its epoch is ``base + create_revision``: the revision of the transaction
                   that took it, so epochs come from etcd's own ordering and strictly increase.
- ``P:isr``        the in-sync set ``"node,node"``.
- ``P:base``       the epoch base (absent: 0). Raised only when a taker's journal has seen an
                   epoch above etcd's revision (a wiped etcd): epochs never go backwards.
- ``P:starts:ID``  ``"<base>|<seq>"`` written by the taking transaction: epoch -> start seq.

Each step is ONE transaction that compares what it relies on: taking compares that the holder
key is absent and that the in-sync set and the base are unchanged since read; renewing keeps
the etcd lease alive and then checks the holder key's ``create_revision`` is still ours;
``set_isr`` and ``release`` compare it too (the fencing check).

TTL: etcd leases count whole seconds and never less than its minimum (1.5 x its election
timeout), so a lease asks for ``ceil(ttl)`` seconds and the holder's local deadline is computed
from that (``effective_ttl_ms``); a keep-alive extends the expiry from when etcd's leader got
it, and an etcd leader change extends every lease: the expiry only moves later, never before
the holder's deadline.
"""

from __future__ import annotations

import base64
import json
import math
import os
import threading
from typing import Any
from urllib.parse import urlsplit

from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import Etcd3Exception

from shardex.coord.base import Holder
from shardex.placement.core import PlacementMap
from shardex.placement.store import check_step, decode_map, encode_map

SCHEME = "etcd"
TIMEOUT_S = 0.5  # per member and request: a slow etcd must not stall a renewal for long
PLACEMENT_KEY = "shardex:placement"


class EtcdUnavailable(Exception):
    """No member of the etcd cluster answered."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _text(kv: dict[str, Any] | None) -> str | None:
    return None if kv is None else base64.b64decode(kv.get("value", "")).decode()


def _prefix_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


def parse_url(url: str) -> list[tuple[str, int]]:
    """``etcd://h:p,h:p`` -> the members' client endpoints (ValueError when malformed)."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME or not parts.netloc:
        raise ValueError(f"not an etcd URL (etcd://host:port,host:port): {url!r}")
    members = []
    for item in parts.netloc.split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"etcd member {item!r}: want host:port")
        members.append((host, int(port)))
    return members


class EtcdClient:
    """The etcd cluster of a URL: each call goes to the member that answered last, else the
    next one. One HTTP session per thread (the renewer thread and the loop call at once)."""

    def __init__(self, members: list[tuple[str, int]], timeout: float = TIMEOUT_S) -> None:
        if not members:
            raise ValueError("etcd: no members")
        self.members = members
        self.timeout = timeout
        self.current = 0
        self._local = threading.local()

    @classmethod
    def from_url(cls, url: str) -> EtcdClient:
        return cls(parse_url(url))

    def _clients(self) -> list[Etcd3Client]:
        got = getattr(self._local, "clients", None)
        if got is None:
            got = self._local.clients = [
                Etcd3Client(host=h, port=p, timeout=self.timeout, api_path="/v3/")
                for h, p in self.members
            ]
        return got

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``/v3/<path>``; the next member on an error; EtcdUnavailable when none answers."""
        clients, why = self._clients(), ""
        for i in range(len(clients)):
            at = (self.current + i) % len(clients)
            c = clients[at]
            try:
                out = c.post(c.get_url(path), data=json.dumps(body))
            except Etcd3Exception as exc:  # down, slow, no leader: ask the next member
                why = str(exc)[:200]
                continue
            self.current = at
            return out
        raise EtcdUnavailable(f"no etcd member answered ({why})")

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]]) -> dict[str, Any]:
        return self.call("kv/txn", {"compare": compare, "success": success})

    def get(self, key: str) -> tuple[dict[str, Any] | None, int]:
        """The key's kv (None: absent) and the store's revision."""
        out = self.call("kv/range", {"key": _b64(key)})
        kvs = out.get("kvs") or []
        return (kvs[0] if kvs else None), int(out["header"]["revision"])

    def get_prefix(self, prefix: str) -> list[dict[str, Any]]:
        out = self.call("kv/range", {"key": _b64(prefix), "range_end": _prefix_end(prefix)})
        return list(out.get("kvs") or [])


def _put(key: str, value: str, lease: str | None = None) -> dict[str, Any]:
    req: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease is not None:
        req["lease"] = lease
    return {"request_put": req}


def _same(key: str, target: str, value: int) -> dict[str, Any]:
    field = {"CREATE": "create_revision", "MOD": "mod_revision"}[target]
    return {"key": _b64(key), "target": target, "result": "EQUAL", field: str(value)}


def _rev(kv: dict[str, Any] | None, field: str) -> int:
    return 0 if kv is None else int(kv.get(field, 0))


class EtcdLeaseStore:
    """One lease in etcd (see the module docstring). The token is (etcd lease id, revision)."""

    def __init__(self, client: EtcdClient, name: str) -> None:
        self.c = client
        self.key = f"shardex:lease:{name}"
        self.isr_key, self.base_key = self.key + ":isr", self.key + ":base"
        self.starts_prefix = self.key + ":starts:"

    def effective_ttl_ms(self, ttl_ms: int) -> int:
        """etcd counts whole seconds: the ttl rounded up to one."""
        return max(1, math.ceil(ttl_ms / 1000)) * 1000

    def _read(self) -> tuple[list[dict[str, Any] | None], int]:
        """The holder, in-sync set and base kvs, read at one revision."""
        keys = (self.key, self.isr_key, self.base_key)
        out = self.c.txn([], [{"request_range": {"key": _b64(k)}} for k in keys])
        kvs = [((r["response_range"].get("kvs") or [None])[0]) for r in out["responses"]]
        return kvs, int(out["header"]["revision"])

    def acquire(self, node: str, endpoint: str, ttl_ms: int, floor: int,
                start_seq: int) -> tuple[int, str, Any]:  # fmt: skip
        (hkv, ikv, bkv), rev = self._read()
        if hkv is not None:
            return 0, "held", None
        members = [m for m in (_text(ikv) or "").split(",") if m]
        if members and node not in members:
            return 0, f"not in the in-sync set ({','.join(members)})", None
        base = int(_text(bkv) or 0)
        puts = []
        if base + rev + 1 <= floor:  # (the taking revision is > rev)
            base = floor - rev
            puts.append(_put(self.base_key, str(base)))
        grant = self.c.call("lease/grant", {"TTL": self.effective_ttl_ms(ttl_ms) // 1000})
        lease_id = str(grant["ID"])
        compare = [_same(self.key, "CREATE", 0),
                   _same(self.isr_key, "MOD", _rev(ikv, "mod_revision")),
                   _same(self.base_key, "MOD", _rev(bkv, "mod_revision"))]  # fmt: skip
        start_key = self.starts_prefix + os.urandom(8).hex()
        puts += [_put(self.key, f"{base}|{node}|{endpoint}", lease_id), _put(self.isr_key, node),
                 _put(start_key, f"{base}|{start_seq}")]  # fmt: skip
        out = self.c.txn(compare, puts)
        if not out.get("succeeded"):
            self._revoke(lease_id)
            return 0, "held (taken while we looked)", None
        taken = int(out["header"]["revision"])
        return base + taken, "ok", (lease_id, taken)

    def _revoke(self, lease_id: str) -> None:
        try:
            self.c.call("lease/revoke", {"ID": lease_id})
        except Exception:  # (it expires by itself)
            pass

    def _holds(self, token: Any) -> bool:
        kv, _ = self.c.get(self.key)
        return kv is not None and _rev(kv, "create_revision") == token[1]

    def renew(self, token: Any, ttl_ms: int) -> bool:
        """Keep-alive of our etcd lease, then the fencing check on the holder key."""
        out = self.c.call("lease/keepalive", {"ID": token[0]})
        if int(out.get("result", out).get("TTL", 0)) <= 0:
            return False  # expired: the key went with it
        return self._holds(token)

    def set_isr(self, token: Any, members: list[str]) -> bool:
        put = _put(self.isr_key, ",".join(members))
        out = self.c.txn([_same(self.key, "CREATE", token[1])], [put])
        return bool(out.get("succeeded"))

    def release(self, token: Any) -> None:
        delete = {"request_delete_range": {"key": _b64(self.key)}}
        self.c.txn([_same(self.key, "CREATE", token[1])], [delete])
        self._revoke(token[0])

    @staticmethod
    def _holder(kv: dict[str, Any] | None) -> Holder | None:
        parts = (_text(kv) or "").split("|", 2)
        if kv is None or len(parts) != 3 or not parts[0].isdigit():
            return None
        return Holder(int(parts[0]) + _rev(kv, "create_revision"), parts[1], parts[2])

    def holder(self) -> Holder | None:
        return self._holder(self.c.get(self.key)[0])

    def holder_ttl(self) -> tuple[Holder | None, int]:
        """The holder and what is left of its etcd lease (etcd rounds to whole seconds: half
        a second less, so a standby looks again soon after the expiry, not late)."""
        kv, _ = self.c.get(self.key)
        if kv is None:
            return None, -2
        out = self.c.call("lease/timetolive", {"ID": kv.get("lease", "0")})
        ttl = int(out.get("TTL", 0))  # (JSON leaves a 0 out; -1: expired)
        return self._holder(kv), (-1 if ttl < 0 else max(0, ttl * 1000 - 500))

    def isr(self) -> list[str]:
        return [m for m in (_text(self.c.get(self.isr_key)[0]) or "").split(",") if m]

    def starts(self) -> dict[int, int]:
        got = {}
        for kv in self.c.get_prefix(self.starts_prefix):
            base, _, seq = (_text(kv) or "").partition("|")
            if base.isdigit() and seq.isdigit():
                got[int(base) + _rev(kv, "create_revision")] = int(seq)
        return got


class EtcdStore:
    """The placement map in etcd: compare-and-set on the key's ``mod_revision``."""

    def __init__(self, client: EtcdClient, key: str = PLACEMENT_KEY) -> None:
        self.c = client
        self.key = key

    def load(self) -> PlacementMap | None:
        kv, _ = self.c.get(self.key)
        return None if kv is None else decode_map(_text(kv) or "", f"etcd key {self.key}")

    def compare_and_set(self, old_version: int | None, new: PlacementMap) -> bool:
        check_step(old_version, new)
        kv, _ = self.c.get(self.key)
        cur = None if kv is None else decode_map(_text(kv) or "", f"etcd key {self.key}")
        if (None if cur is None else cur.version) != old_version:
            return False
        out = self.c.txn([_same(self.key, "MOD", _rev(kv, "mod_revision"))],
                         [_put(self.key, encode_map(new))])  # fmt: skip
        return bool(out.get("succeeded"))

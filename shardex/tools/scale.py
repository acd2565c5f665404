"""``shardex reshard --shards N``'s process steps: growing or shrinking the engine shard processes
of a cluster that ``shardex up`` supervises, around the pair moves (``shardex.tools.reshard``).

Grow (N above the running count R), before the moves:
  1. the placement map over N with every pair pinned where it is (``placement.scale.grown``),
     stored in the data dir and sent to the running shards (their HELLOs carry it to the
     routers, which add slots R..N-1: ``node.router_resize``);
  2. the supervisor is asked for N shards (``shardex.scalectl``) and starts R..N-1;
  3. wait until every router serves N registered shards (with the account tier the
     supervisor restarts the account shards, which open one forward link per engine shard at
     start, and the routers, which keep the account shards' slots after the engine shards':
     wait until each account shard links to all N). The bridge needs no restart: it
     asks the router for the shard count every second and follows the new shards from what
     Redis holds for them (``shardex.node.bridge.follow``).
Shrink (N below R), after the moves emptied shards N..R-1:
  1. the map over N (``placement.scale.shrunk``: refused while a pair is still there), stored
     and sent to shards 0..N-1 (the routers drop slots N..);
  2. the supervisor stops shards N..R-1; the bridge lets each go once its events are written.

Every step is decided from what the data dir, the map and the router say now, so a reshard
killed at any point is run again and goes on (a map already grown is not grown again, a
supervisor already at N starts and stops nothing).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardex import endpoints
from shardex.client import AsyncClient, ShardexError
from shardex.placement.core import PlacementMap
from shardex.placement.scale import grown, shrunk
from shardex.placement.store import DirStore
from shardex.scalectl import FORMAT, REQUEST_FILE, read_state, write
from shardex.tools.move_map import MapPublisher
from shardex.tools.shard_ask import MoveError

Say = Callable[[str], None]
ANSWER_S = 180.0  # the supervisor's answer (stopping a shard waits for its snapshot)
REGISTER_S = 120.0  # new shards recovering and registering with every router


@dataclass(frozen=True)
class Supervised:
    """The ``shardex up`` that runs the cluster: its data dir, pid and process counts."""

    data_dir: Path
    pid: int
    shards: int  # engine shard processes it runs
    bridge: bool  # whether it runs a bridge
    replicas: int = 1  # processes per shard (2: a leader and a standby, both started/stopped)


def supervisor_of(data_dir: str | Path | None, endpoint: str) -> Supervised | None:
    """The running ``shardex up`` whose endpoints file (in ``data_dir``, else
    ``$SHARDEX_DATA_DIR`` or ./data) names the router ``endpoint``; None if there is none."""
    root = endpoints.data_dir_of(data_dir)
    try:
        rec = endpoints.read(root)
    except endpoints.EndpointsFileError:
        return None
    if rec is None or rec.get("state") != "running" or endpoints.staleness(rec) is not None:
        return None
    routers = set(str(rec.get("router", "")).split(","))
    if not set(endpoint.split(",")) & routers or type(rec.get("pid")) is not int:
        return None
    replicas = rec.get("replicas")
    return Supervised(root, rec["pid"], len(rec.get("shards") or ()),
                      rec.get("bridge_metrics") is not None,
                      replicas if type(replicas) is int and replicas > 0 else 1)  # fmt: skip


def not_supervised(n: int, running: int) -> str:
    """The refusal when N needs other shard processes and no ``shardex up`` runs them."""
    return (f"--shards {n}: {running} engine shard process(es) run, and this cluster was not "
            "started by shardex up (no running cluster in the data dir's endpoints.json for "
            "this router: give --data-dir): start or stop shard processes yourself (under "
            f"honcho: restart with -c engine={n}), then reshard")  # fmt: skip


async def grow(
    client: AsyncClient, sup: Supervised, pmap: PlacementMap, symbols: list[str], n: int,
    say: Say,
) -> None:  # fmt: skip
    """Run engine shards 0..n-1 where ``sup.shards`` < n run (steps 1-3 of the docstring)."""
    say(f"growing to {n} engine shard processes (shardex up pid {sup.pid} runs {sup.shards})")
    running = max(sup.shards, 1)
    pub = MapPublisher(client, min(running, pmap.shards), DirStore(sup.data_dir))
    m = await pub.apply(pmap, lambda b: grown(b, symbols, n))
    if m is not None:
        say(f"  placement v{m.version}: {m.shards} shards, every pair pinned where it is")
    before = await _account_pids(client) if client.accounts else set()
    await request(sup, {"op": "shards", "shards": n}, say)
    await registered(client, n, say)
    if client.accounts:
        await relinked(client, n, before, say)


async def shrink(
    client: AsyncClient, sup: Supervised, pmap: PlacementMap, symbols: list[str], n: int,
    say: Say,
) -> None:  # fmt: skip
    """Stop engine shards n.. once the moves emptied them (steps 1-2 of the docstring)."""
    say(f"shrinking to {n} engine shard processes (shardex up pid {sup.pid} runs {sup.shards})")
    pub = MapPublisher(client, n, DirStore(sup.data_dir))
    m = await pub.apply(pmap, lambda b: shrunk(b, symbols, n))
    if m is not None:
        say(f"  placement v{m.version}: {m.shards} shard(s)")
    before: set[int] = set()
    if client.accounts:
        await drained(client, n, sup.shards, say)
        before = await _account_pids(client)
    await request(sup, {"op": "shards", "shards": n}, say)
    await registered(client, n, say)
    if client.accounts:
        await relinked(client, n, before, say)


def unsettled(engines: list[dict[str, Any]], accounts: list[dict[str, Any]]) -> list[str]:
    """What still flows between the account shards and the ``engines`` about to stop (pure):
    a forward an account shard sent that the engine shard has not applied, or a settlement
    the engine shard put on the link that the account shard has not applied ([] : drained).
    A status that failed or lacks the link counts as not drained."""
    left = []
    for eng in engines:
        i, fin, fout = eng.get("shard"), eng.get("link_in"), eng.get("link_out")
        if not isinstance(fin, dict) or not isinstance(fout, dict):
            left.append(f"engine shard {i}: no link status ({eng.get('error', 'none')})")
            continue
        for a, acc in enumerate(accounts):
            sent = _last(acc.get("outbox"), i)
            applied = _last(fin, a)
            if sent != applied:
                left.append(f"forwards a{a}->e{i}: {applied} of {sent} applied")
            owed, got = _last(fout, a), _last(acc.get("inbox"), i)
            if owed != got:
                left.append(f"settlements e{i}->a{a}: {got} of {owed} applied")
    return left


def _last(d: Any, key: int) -> int | None:
    """``d[key]`` of a link's last-seq map, whose keys may come back as strings; 0 when absent
    (nothing sent yet), None when ``d`` is no map."""
    if not isinstance(d, dict):
        return None
    v = d.get(key, d.get(str(key), 0))
    return v if type(v) is int else None


async def drained(client: AsyncClient, n: int, running: int, say: Say) -> None:
    """With the account tier, before shards n..running-1 stop: wait until each settled with
    every account shard (every forward applied, every settlement applied), so a fill on an
    emptied shard before its pairs moved is never lost with its process."""
    deadline = time.monotonic() + REGISTER_S
    left: list[str] = []
    while time.monotonic() < deadline:
        try:
            engines = [st for st in await client.status() if st.get("shard", -1) >= n]
            left = unsettled(engines, await client.account_status())
        except ShardexError as exc:
            left = [str(exc)]
        if not left and len(engines) == running - n:
            say(f"  engine shard(s) {n}..{running - 1} settled with every account shard")
            return
        await asyncio.sleep(0.2)
    raise MoveError(f"engine shards {n}.. did not settle with the account shards within "
                    f"{REGISTER_S:.0f} s: {'; '.join(left[:4])}")  # fmt: skip


async def request(sup: Supervised, body: dict[str, Any], say: Say) -> dict[str, Any]:
    """Write one request for the supervisor and wait for its answer (``MoveError`` if it
    failed or did not answer within ``ANSWER_S``)."""
    rid = secrets.token_hex(8)
    write(sup.data_dir / REQUEST_FILE, {"format": FORMAT, "id": rid, **body})
    what = " ".join(f"{k}={v}" for k, v in body.items())
    say(f"  asked shardex up (pid {sup.pid}): {what}")
    deadline = time.monotonic() + ANSWER_S
    while time.monotonic() < deadline:
        state = read_state(sup.data_dir)
        if state is not None and state.get("id") == rid:
            if state.get("state") != "done":
                raise MoveError(f"shardex up refused {what} ({state.get('code')}): "
                                f"{state.get('message')}")  # fmt: skip
            say(f"  shardex up: done ({state.get('shards')} engine shard processes)")
            return state
        if not _alive(sup.pid):
            raise MoveError(f"shardex up (pid {sup.pid}) is not running")
        await asyncio.sleep(0.1)
    raise MoveError(f"shardex up (pid {sup.pid}) did not answer {what} within {ANSWER_S:.0f} s "
                    f"(its log says why; {sup.data_dir / REQUEST_FILE})")  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def registered(client: AsyncClient, n: int, say: Say) -> None:
    """Wait until the router serves exactly ``n`` engine shards, each registered."""
    deadline = time.monotonic() + REGISTER_S
    last = None
    while time.monotonic() < deadline:
        try:
            info = await client.topology()
        except ShardexError:  # (a router restarting: with the account tier, a grow does)
            await asyncio.sleep(0.2)
            continue
        slots = info.get("topology", []) if isinstance(info, dict) else []
        up = sum(1 for t in slots if t.get("pid"))
        if info.get("shards") == n and up == n:
            say(f"  the router serves {n} engine shard(s)")
            return
        if (up, info.get("shards")) != last:
            last = (up, info.get("shards"))
            say(f"  waiting: the router serves {up} of {info.get('shards')} shard slot(s)")
        await asyncio.sleep(0.2)
    raise MoveError(f"the router did not serve {n} engine shards within {REGISTER_S:.0f} s")


async def _account_pids(client: AsyncClient) -> set[int]:
    """The pids of the account shard processes the router knows now."""
    info = await client.topology()
    return {t["pid"] for t in info.get("account_topology") or () if t.get("pid")}


async def relinked(client: AsyncClient, n: int, before: set[int], say: Say) -> None:
    """With the account tier: wait until every account shard runs a process started by the
    grow (a pid not in ``before``: the supervisor restarts them with links to ``n`` engine
    shards) that has heard from each of the ``n`` on its link."""
    deadline = time.monotonic() + REGISTER_S
    while time.monotonic() < deadline:
        try:
            info = await client.topology()
            pids = [t.get("pid") for t in info.get("account_topology") or ()]
            if pids and all(p and p not in before for p in pids):
                linked = [list(st.get("engines_linked", ())) for st in
                          await client.account_status()]  # fmt: skip
                if len(linked) == len(pids) and all(x == list(range(n)) for x in linked):
                    say(f"  every account shard links to the {n} engine shard(s)")
                    return
        except ShardexError:  # (a router or an account shard restarting)
            pass
        await asyncio.sleep(0.2)
    raise MoveError(f"the account shards did not link to {n} engine shards within "
                    f"{REGISTER_S:.0f} s")  # fmt: skip

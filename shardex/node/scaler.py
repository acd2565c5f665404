"""The ``shardex up`` supervisor's side of ``shardex reshard``: it watches the data dir's request
file (``shardex.scalectl``) from its loop and starts or stops engine shard processes.

A request for N engine shards is carried out only once the placement map stored in the data
dir is over N shards (``reshard`` writes it first: a grown map pins every pair where it is,
a shrunk one is written only after the moves emptied the shards that stop), because every new
shard process refuses to start on a map of another count. Then: the shards above N stop
(SIGTERM: each snapshots on the way out), N is recorded in ``DATA_DIR/shards.json`` (so the
next ``shardex up`` and every restarted child agree), the missing shards start, and every
other child's command line is brought to N (a router or shard restarted later starts with the
count the cluster runs; the running ones learn it from the map). The answer goes to the state
file with the request's id; a request it cannot carry out is answered ``failed`` with a stable
code and changes nothing, and so is a request found unanswered when the supervisor starts
(``stale``: written for a supervisor killed before it answered).

Why the supervisor and not ``reshard`` starts the processes: the children must be the
supervisor's, so that it restarts them when they die and stops them with the cluster.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from shardex.datadir import SHARDS_FILE
from shardex.layout import MAX_SHARDS
from shardex.node.supervisor import Child, Supervisor
from shardex.placement.store import DirStore, StoreError
from shardex.scalectl import (
    REQUEST_FILE,
    STATE_FILE,
    ControlError,
    Request,
    answer,
    parse_request,
    trusted,
    write,
)

log = logging.getLogger("shardex.up")

POLL_S = 0.25  # how often the supervisor looks at the request file (one stat)


class Scaler:
    """Applies the data dir's scale requests to ``sup``'s children (call ``tick`` often)."""

    def __init__(
        self, sup: Supervisor, data_dir: str | Path, shards: int,
        children_for: Callable[[int], list[Child]], on_resized: Callable[[int], None],
        refusal: str | None = None, relink: Callable[[str], bool] | None = None,
    ) -> None:  # fmt: skip
        """``children_for(n)``: the cluster's children for ``n`` engine shards (in start
        order); ``on_resized(n)``: called once ``n`` shards run (the endpoints file);
        ``refusal``: why this cluster cannot change its count (None: it can); ``relink``:
        the children (by name) restarted when the count changes (with the account tier: the
        account shards and routers; on a shrink ``reshard`` has waited until the emptied
        shards settled with every account shard before asking)."""
        self.sup = sup
        self.root = Path(data_dir)
        self.shards = shards
        self.children_for = children_for
        self.on_resized = on_resized
        self.refusal = refusal
        self.relink = relink
        self._next = 0.0
        self._seen: tuple[int, int, int] | None = None
        self._answered: set[str] = set()
        state = self.root / STATE_FILE
        try:  # an id answered before a supervisor restart is not acted on again
            self._answered.add(str(json.loads(state.read_text()).get("id")))
        except (OSError, ValueError, AttributeError):
            pass
        self._refuse_stale()

    def _refuse_stale(self) -> None:
        """Answer ``failed``/``stale`` a request left unanswered by an earlier supervisor (it
        was killed before it answered): its ``reshard`` waited for that supervisor's pid and
        has given up, and this one was started with a count of its own, so acting on the
        request would change the processes with nobody asking. Running ``reshard`` again
        asks anew."""
        rid = _loose_id(self._read(self.root / REQUEST_FILE) or b"")
        if rid and rid not in self._answered:
            self._answered.add(rid)
            log.warning("scale request %s was left by a supervisor that stopped before "
                        "answering it: not acted on (run shardex reshard again)", rid)  # fmt: skip
            self._answer(rid, "failed", "stale", "the supervisor it was written for stopped "
                         "before answering it: run shardex reshard again")  # fmt: skip

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except OSError:
            return None

    def tick(self) -> None:
        """Look at the request file (at most every ``POLL_S``); act on a new request."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + POLL_S
        path = self.root / REQUEST_FILE
        try:
            st = os.stat(path)
        except OSError:
            return
        seen = (st.st_mtime_ns, st.st_ino, st.st_size)
        if seen == self._seen:
            return
        self._seen = seen
        text = self._read(path)
        if text is not None:
            self._handle(text, trusted(path, st))

    def _handle(self, text: bytes, is_trusted: bool) -> None:
        """Parse, check and carry out one request; write its answer."""
        try:
            req = parse_request(text, MAX_SHARDS)
        except ControlError as exc:
            log.error("scale request refused (%s): %s", exc.code, exc)
            self._answer(_loose_id(text), "failed", exc.code, str(exc))
            return
        if req.id in self._answered:
            return
        self._answered.add(req.id)
        if not is_trusted:
            msg = (f"{self.root / REQUEST_FILE} must belong to the supervisor's user and be "
                   "writable by nobody else")  # fmt: skip
            log.error("scale request %s refused: %s", req.id, msg)
            self._answer(req.id, "failed", "untrusted", msg)
            return
        try:
            self._apply(req)
        except ControlError as exc:
            log.error("scale request %s failed (%s): %s", req.id, exc.code, exc)
            self._answer(req.id, "failed", exc.code, str(exc))
            return
        self._answer(req.id, "done")

    def _answer(self, rid: str, state: str, code: str = "", message: str = "") -> None:
        try:
            write(self.root / STATE_FILE, answer(rid, state, self.shards, code, message))
        except OSError as exc:
            log.error("cannot write %s: %s", self.root / STATE_FILE, exc)

    def _apply(self, req: Request) -> None:
        if req.op == "restart":
            self._restart(req.name)
        else:
            self._resize(req.shards)

    def _restart(self, name: str) -> None:
        """Stop child ``name``; the supervisor's loop starts it again at once."""
        found = [c for c in self.sup.children if c.name == name]
        if not found:
            raise ControlError("no_child", f"this cluster runs no {name}")
        log.info("restarting %s (asked by shardex reshard)", name)
        self._restart_all(found)

    def _restart_all(self, children: list[Child]) -> None:
        """Stop ``children`` (SIGTERM: each snapshots on the way out); the supervisor's loop
        starts each again at once, with its current command line."""
        self.sup.stop_children(children)
        for c in children:
            c.proc, c.next_start = None, 0.0

    def _resize(self, n: int) -> None:
        """Run engine shards 0..n-1 (see the module docstring)."""
        if self.refusal:
            raise ControlError("unsupported", self.refusal)
        try:
            stored = DirStore(self.root).load()
        except StoreError as exc:
            raise ControlError("placement", str(exc)) from None
        if stored is None or stored.shards != n:
            have = "none" if stored is None else f"one over {stored.shards} shard(s)"
            raise ControlError("placement", f"the data dir's placement map is {have}, not over "
                               f"{n}: shardex reshard writes it before asking")  # fmt: skip
        relinked = [c for c in self.sup.children if self.relink is not None and
                    self.relink(c.name)] if n != self.shards else []  # fmt: skip
        new = self.children_for(n)
        wanted = {c.name for c in new}
        gone = [c for c in self.sup.children if c.name not in wanted]
        if gone:
            log.info("stopping %s (shardex reshard --shards %d)",
                     ", ".join(c.name for c in gone), n)  # fmt: skip
            self.sup.stop_children(gone)
        write(self.root / SHARDS_FILE, {"shards": n})
        old = {c.name: c for c in self.sup.children}
        merged: list[Child] = []
        for c in new:
            kept = old.get(c.name)
            if kept is not None:
                kept.argv = c.argv  # (used at its next restart)
                merged.append(kept)
            else:
                merged.append(c)
                c.start()
        self.sup.children = merged
        self.shards = n
        if relinked:  # (their links are opened at start: restarted with the new count)
            log.info("restarting %s: they link to %d engine shards now",
                     ", ".join(c.name for c in relinked), n)  # fmt: skip
            self._restart_all(relinked)
        self.on_resized(n)


def _loose_id(text: bytes) -> str:
    """The id of a request that did not parse, when it has a usable one (for its answer)."""
    try:
        rid = json.loads(text).get("id")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return ""
    return rid if type(rid) is str and rid.isalnum() and len(rid) <= 64 else ""

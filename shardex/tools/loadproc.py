"""One load generator process: its sockets, its send loop, and the counting of replies.

Where a command goes, how commands are grouped into frames and which fates to ask are the SDK's
decisions, not a copy of them: ``ClientCore.plan`` (its ``route``) groups every frame of orders
and of fate questions, and ``FateTracker`` runs ``ClientCore.fate_steps``. What is loadgen's own
is the I/O that makes it fast: raw DEALER sockets (one per connection, or per shard when
direct), frames of engine tuples with no Decimal conversion, non-blocking receives and a
``select`` on the sockets' FDs between them, so the open loop sends on time.
"""

from __future__ import annotations

import os
import select
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import zmq
from hdrh.histogram import HdrHistogram

from shardex.client import MALFORMED_PREFIX, TIMEOUT_PREFIX, ClientCore, uncertain
from shardex.engine import Market
from shardex.engine.codes import (
    BUY,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_REJECTED,
    EV_TRADE,
    MARKET,
    OP_NEW,
    STOP_MARKET,
    TAKE_PROFIT,
    reject_name,
)
from shardex.tools.fates import FateTracker, Step
from shardex.tools.loadconfig import LoadConfig, LoadError
from shardex.tools.loadreport import Report, open_outcomes
from shardex.tools.workload import Workload
from shardex.wire import codes
from shardex.wire.layouts import (
    CMD_OP,
    CMD_SYMBOL,
    EV_KIND,
    NEW_BUDGET,
    NEW_OPTS,
    NEW_QTY,
    NEW_SIDE,
    NEW_TYPE,
    REJECTED_CODE,
    TRADE_MAKER,
)
from shardex.wire.protocol import ErrorText, decode_reply, encode_request
from shardex.wire.transport import (
    EndpointError,
    Handshake,
    Pending,
    RequestIds,
    TopologyError,
    Unreachable,
    dealer,
    parse_topology,
    request,
)

_MARKET_KINDS = (MARKET, STOP_MARKET, TAKE_PROFIT)  # the buys among them need a budget
HIST_MAX_US = 60_000_000
MAX_FATE_QUERIES = 200_000  # open outcomes whose fate one process asks; beyond: "unknown"
FATE_TIMEOUT_S = 2.0  # a fate question's reply is awaited at least this long
INTERRUPT_GRACE_S = 1.0  # after Ctrl-C: how long replies in flight are still awaited
CONNECT_WAIT_S = 0.2  # before the first order: let the connections establish


def probe(cfg: LoadConfig, ctx: zmq.Context) -> dict[str, Any]:
    """The router's topology (one request), with every way it can fail said in one line."""
    key = cfg.keyfile()
    watch: list[Handshake] = []
    sock = dealer(ctx, cfg.endpoint, cfg.timeout, key=key, watch=watch)
    suspect = " (or a wrong or revoked key)" if key is not None else ""
    try:
        info = parse_topology(*request(sock, b"", [], cfg.timeout, RequestIds()))
    except (TimeoutError, Unreachable) as exc:
        problem = watch[0].problem()
        if problem is not None:
            raise LoadError(f"{problem} ({cfg.endpoint})") from None
        if isinstance(exc, Unreachable):
            raise LoadError(
                f"cannot reach {cfg.endpoint} within {cfg.timeout}s (is the cluster running?)"
                f"{suspect}"
            ) from None
        raise LoadError(
            f"no answer from a router at {cfg.endpoint} within {cfg.timeout}s "
            f"(is the cluster running?){suspect}"
        ) from None
    except TopologyError as exc:
        raise LoadError(f"router at {cfg.endpoint}: {exc}") from None
    finally:
        watch[0].close()
        sock.close(0)
    return info


def connect(cfg: LoadConfig, ctx: zmq.Context) -> tuple[list[zmq.Socket], int]:
    """Sockets (per connection; when direct, one per engine shard then one per account shard
    with risk on: their direct ports) and the engine shard count from the router."""
    info = probe(cfg, ctx)
    shards = info["shards"]
    eps = [cfg.endpoint]
    if cfg.direct:
        eps = [t.get("direct") for t in info["topology"]]
        if cfg.risk == "on":
            accts = sorted(info.get("account_topology") or (), key=lambda t: t.get("shard", -1))
            eps += [t.get("direct") for t in accts]
        if len(eps) != shards + (cfg.account_shards if cfg.risk == "on" else 0):
            raise LoadError("not every shard has registered with the router yet")
    if cfg.direct and not all(type(e) is str and e for e in eps):
        raise LoadError("not every shard has registered a direct endpoint yet")
    socks = []
    key = cfg.keyfile()
    for _ in range(cfg.concurrency):
        for ep in eps:
            try:
                socks.append(dealer(ctx, ep, cfg.timeout, immediate=False, key=key))
            except EndpointError as exc:
                raise LoadError(str(exc)) from None
    return socks, shards


def generator(cfg: LoadConfig, prefix: str) -> Workload:
    """The load generator's order flow for ``cfg``: the project's one ``Workload`` in its cheap
    mode (ids ``prefix`` + n; ``.next()`` gives one engine command tuple)."""
    return Workload(
        cfg.symbol_names(),
        seed=cfg.seed,
        markets=cfg.market_table(),
        mix=cfg.mix,  # type: ignore[arg-type]
        accounts=cfg.accounts,
        shadow=False,
        prefix=prefix,
    )


def sdk_core(cfg: LoadConfig, table: Mapping[str, Market], shards: int) -> ClientCore:
    """The SDK's socket-free core for this run: its routing and plan (``ClientCore.plan``) and
    its fate decision (``ClientCore.fate_steps``), with the cluster's shape set."""
    core = ClientCore(cfg.endpoint, markets=table, timeout=cfg.timeout, key=False)
    core.shards = shards
    core.accounts = cfg.account_shards if cfg.risk == "on" else 0
    return core


def budget(cmd: tuple, table: Mapping[str, Market], mid: Mapping[str, int]) -> tuple:
    """A market buy (or stop-market / take-profit buy) with a quote ``budget`` (the account
    tier requires one): twice the mid's notional of its qty, as a decimal string of the quote
    asset (in its place before the options of a stop)."""
    symbol = cmd[CMD_SYMBOL]
    m = table[symbol]
    amount = str(m.tick * m.lot * (2 * mid[symbol] * cmd[NEW_QTY]))
    return (*cmd[:NEW_BUDGET], amount, *cmd[NEW_OPTS:])


def count_events(rep: Report, rejected: Counter[str], results: Sequence[Any], ours: str,
                 engine: bool = True) -> None:  # fmt: skip
    """Count one frame's per-command results: ``()`` is the account tier's "held and
    forwarded" (no events), else the events in the reply (reject classes by code; a trade's
    maker is one of ours when its id starts with ``ours``). ``engine`` False: only what the
    account tier decided (held, its rejects): the engine's events come from its PUB."""
    for evs in results:
        if evs == ():
            rep.held += 1
        for ev in evs if isinstance(evs, tuple | list) else ():
            kind = ev[EV_KIND] if isinstance(ev, tuple | list) and ev else None
            if kind == EV_REJECTED and (engine or len(ev) > REJECTED_CODE):
                code = ev[REJECTED_CODE] if len(ev) > REJECTED_CODE else None
                rejected[reject_name(code)] += 1
            elif not engine:
                continue
            elif kind == EV_ACCEPTED:
                rep.accepted += 1
            elif kind == EV_TRADE:
                rep.trades += 1
                maker = ev[TRADE_MAKER] if len(ev) > TRADE_MAKER else ""
                maker_ours = ours and str(maker).startswith(ours)
                rep.fills += 2 if maker_ours else 1
            elif kind == EV_CANCELLED:
                rep.cancelled += 1


class LoadProcess:
    """One generator process's load (``run``): sends, receives, counts, asks open fates."""

    def __init__(self, cfg: LoadConfig, index: int, progress: Any = None, stop: Any = None):
        self.cfg, self.index, self.progress, self.stop = cfg, index, progress, stop
        self.ctx = zmq.Context()
        self.socks, self.shards = connect(cfg, self.ctx)
        self.per_conn = len(self.socks) // cfg.concurrency
        self.gen = generator(cfg, f"{cfg.id_prefix}g{index}-{os.getpid()}-{cfg.seed}-")
        self.rep = Report(hist=HdrHistogram(1, HIST_MAX_US, 3))
        self.rejected: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.error_codes: Counter[str] = Counter()  # the same errors by code name
        uniq = list(dict.fromkeys(self.socks))
        self.uniq, self.fds = uniq, [s.getsockopt(zmq.FD) for s in uniq]
        self.clock = time.perf_counter
        # req → ("cmds", cmds, sent stamps, (socket index, shard slot)); in ``asking``:
        #       ("fate", (dialogue token, positions), None, socket index)
        self.pending = Pending(cfg.timeout, self.clock)
        # fate questions wait longer: under a backlog a question asked again too soon is one
        # more request queued behind the first (they are asked again only after back-off)
        fate_timeout = max(cfg.timeout, FATE_TIMEOUT_S)
        self.asking = Pending(fate_timeout, self.clock)
        self.asking_text = ErrorText(codes.TIMEOUT, f"{TIMEOUT_PREFIX} {fate_timeout}s")
        self.timeout_text = f"{TIMEOUT_PREFIX} {cfg.timeout}s"
        self.inflight = [0] * len(self.socks)
        self.ids = RequestIds()
        self.risk_on = cfg.risk == "on" and cfg.account_shards > 0
        self.table = cfg.market_table()
        self.core = sdk_core(cfg, self.table, self.shards)
        # commands whose outcome is open (timeout, the router's "may have run", unreadable
        # reply): their fates are asked with the SDK's decision, again with back-off
        self.fates = FateTracker(self.core, cfg.batch, MAX_FATE_QUERIES, cfg.window)
        self.rate = cfg.rate / cfg.procs if cfg.rate else None
        self.t0 = self.last_progress = 0.0
        self.end: float | None = None
        self.sent = 0
        self.next_i = 0  # open loop: index of the next scheduled command
        self.stopped_at: float | None = None
        self.load_done: float | None = None  # every order answered or timed out

    # -- sending -----------------------------------------------------------------------------

    def slot(self, conn: int, group: int) -> int:
        """The socket of connection ``conn`` for shard slot ``group`` (direct: one socket per
        engine shard, then per account shard; through the router: one per connection)."""
        return conn if self.per_conn == 1 else conn * self.per_conn + group

    def next_cmd(self) -> tuple:
        cmd = self.gen.next()
        if (
            self.risk_on
            and cmd[CMD_OP] == OP_NEW
            and cmd[NEW_TYPE] in _MARKET_KINDS
            and cmd[NEW_SIDE] == BUY
        ):
            cmd = budget(cmd, self.table, self.gen.mid)
        return cmd

    def send_frames(self, conn: int, cmds: list[tuple], stamps: Any) -> None:
        """``cmds`` of connection ``conn`` as the SDK plans them: one frame per shard slot (a
        frame must hold one shard's commands: the router routes it whole by its key, and a
        shard rejects pairs it does not own; risk on: new/amend to the account's shard)."""
        per_cmd = isinstance(stamps, list)
        for group, key, idx in self.core.plan(cmds, len(cmds), by_shard=True):
            frame = [cmds[i] for i in idx]
            sock_i = self.slot(conn, group)
            req = self.ids.next()
            self.socks[sock_i].send_multipart([key, req, encode_request(frame)])
            when = [stamps[i] for i in idx] if per_cmd else stamps
            self.pending.add(req, ("cmds", frame, when, (sock_i, group)))
            self.inflight[sock_i] += 1
        self.sent += len(cmds)

    def send_open(self, now: float) -> None:
        """Open loop: every command due by ``now`` (command i at t0 + i / rate), in frames of
        at most ``batch``, each connection taking every ``concurrency``-th command."""
        cfg, rate = self.cfg, self.rate
        assert rate is not None
        due = int((now - self.t0) * rate) + 1
        if cfg.orders is not None:
            due = min(due, cfg.orders)
        conns = cfg.concurrency
        while self.next_i < due:
            cmds: list[list[tuple]] = [[] for _ in range(conns)]
            stamps: list[list[float]] = [[] for _ in range(conns)]
            stop = min(due, self.next_i + cfg.batch)
            for i in range(self.next_i, stop):
                cmds[i % conns].append(self.next_cmd())
                stamps[i % conns].append(self.t0 + i / rate)
            self.next_i = stop
            for conn in range(conns):
                if cmds[conn]:
                    self.send_frames(conn, cmds[conn], stamps[conn])

    def send_closed(self) -> None:
        """Closed loop: keep ``window`` frames of ``batch`` commands in flight per connection."""
        cfg, per = self.cfg, self.per_conn
        for conn in range(cfg.concurrency):
            base = conn * per
            while sum(self.inflight[base : base + per]) < cfg.window:
                n = cfg.batch
                if cfg.orders is not None:
                    n = min(n, cfg.orders - self.sent)
                    if n <= 0:
                        break
                cmds = [self.next_cmd() for _ in range(n)]
                self.send_frames(conn, cmds, self.clock())

    def ask(self, steps: list[Step]) -> None:
        """Send fate questions, planned by the SDK: one frame per target shard (a query is
        (op, symbol, account, id): its account's shard for the account tier's step)."""
        for step in steps:
            plan = self.core.plan(step.queries, len(step.queries), step.via_accounts, True)
            for group, key, idx in plan:
                queries = [step.queries[k] for k in idx]
                positions = [step.positions[k] for k in idx]
                req = self.ids.next()
                si = self.slot(0, group)
                self.socks[si].send_multipart([key, req, encode_request(queries)])
                self.asking.add(req, ("fate", (step.token, positions), None, si))

    # -- receiving ---------------------------------------------------------------------------

    def receive(self) -> bool:
        """Handle every reply waiting on any socket; True when there was one."""
        got_any = False
        for sock in self.uniq:
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.handle(frames)
                got_any = True
        return got_any

    def handle(self, frames: list[bytes]) -> None:
        if len(frames) != 2:  # [request id, payload]
            return
        req, payload = frames
        entry = self.pending.pop(req) or self.asking.pop(req)
        if entry is None:
            return
        kind, cmds, stamps, where = entry
        error, results = decode_reply(payload)
        if kind == "fate":
            self.ask(self.fates.answer(*cmds, error, results, self.clock()))
            return
        sock_i, group = where
        self.inflight[sock_i] -= 1
        now = self.clock()
        n = len(cmds)
        hist = self.rep.hist
        if isinstance(stamps, float):
            hist.record_value(max(1, int((now - stamps) * 1e6)), n)
        else:
            for t in stamps:
                hist.record_value(max(1, int((now - t) * 1e6)))
        if error is None and (not isinstance(results, tuple | list) or len(results) != n):
            error = ErrorText(codes.MALFORMED_REPLY, f"{MALFORMED_PREFIX} (result count)")
        if error is not None:
            self.errors[str(error)[:200]] += n
            self.error_codes[error.name] += n
            if uncertain(error):  # e.g. the router's "may have run: ask its fate"
                for c in cmds:
                    self.fates.add(c, now)
            return
        self.rep.acked += n
        if not self.risk_on:
            count_events(self.rep, self.rejected, results, self.cfg.id_prefix)
        elif group >= self.shards:  # (an engine shard's reply: its events are on its PUB)
            count_events(self.rep, self.rejected, results, self.cfg.id_prefix, engine=False)

    def expire(self, now: float) -> None:
        for kind, cmds, _, where in [*self.pending.expire(now), *self.asking.expire(now)]:
            if kind == "fate":
                self.ask(self.fates.answer(*cmds, self.asking_text, None, now))
            else:
                self.inflight[where[0]] -= 1
                self.errors[self.timeout_text] += len(cmds)
                self.error_codes["timeout"] += len(cmds)
                for c in cmds:
                    self.fates.add(c, now)

    # -- the loop ----------------------------------------------------------------------------

    def done_sending(self, now: float) -> bool:
        if self.stopped_at is not None:
            return True
        if self.cfg.orders is not None and self.sent >= self.cfg.orders:
            return True
        return self.end is not None and now >= self.end

    def wait(self) -> None:
        """Sleep until the next command is due or a reply may have arrived: select on the
        sockets' FDs has µs resolution (zmq_poll has ms), so open-loop sends are not late and
        the generator does not spin on the cores it is measuring."""
        wait = 0.05
        if self.rate and not self.done_sending(self.clock()):
            wait = min(0.05, self.t0 + self.next_i / self.rate - self.clock())
        if wait > 0:
            select.select(self.fds, [], [], wait)

    def step(self) -> bool:
        """One turn of the loop; False when the run is over."""
        now = self.clock()
        if self.stop and self.stopped_at is None:
            self.stopped_at = now
        if not self.done_sending(now):
            if self.rate:
                self.send_open(now)
            else:
                self.send_closed()
        if not self.receive():
            self.wait()
        now = self.clock()
        self.expire(now)
        if self.load_done is None and self.done_sending(now) and not any(self.inflight):
            self.load_done = now  # the load is over: what is still open gets ``fate_wait``
            self.fates.finish(now + self.cfg.fate_wait)
        self.ask(self.fates.due(now))
        grace = min(self.cfg.timeout, INTERRUPT_GRACE_S)
        if self.stopped_at is not None and now - self.stopped_at > grace:
            self.asking.drain()
            for _, cmds, _, _ in self.pending.drain():
                self.rep.abandoned += len(cmds)
            self.fates.abandon()
        if self.progress is not None and now - self.last_progress >= 1.0:
            self.progress.put(self.progress_item())
            self.last_progress = now
        idle = not self.pending and not self.asking and self.fates.done
        return not (idle and self.done_sending(now))

    def progress_item(self) -> tuple:
        """What a generator puts on the progress queue (see ``Progress``)."""
        rep, f = self.rep, self.fates.fates
        timeouts = open_outcomes(self.error_codes)
        return (
            self.index, self.sent, rep.acked, sum(self.errors.values()),
            rep.hist.get_value_at_percentile(99), timeouts, f["executed"], f["not_executed"],
            f["unknown"], self.fates.open,
        )  # fmt: skip

    def run(self) -> Report:
        time.sleep(CONNECT_WAIT_S)  # let connections establish
        self.t0 = self.last_progress = self.clock()
        self.end = self.t0 + self.cfg.duration if self.cfg.duration else None
        try:
            while self.step():
                pass
            return self.report()
        finally:
            for s in self.socks:
                s.close(0)
            self.ctx.term()

    def report(self) -> Report:
        rep, fates = self.rep, self.fates
        over = self.stopped_at or self.load_done or self.clock()
        rep.seconds = over - self.t0
        rep.fate_seconds = round(max(0.0, self.clock() - over), 3)
        rep.sent = self.sent
        rep.rejected = dict(self.rejected)
        rep.errors = dict(self.errors)
        rep.error_codes = dict(self.error_codes)
        rep.fates = dict(fates.fates)
        rep.unknown_why = dict(fates.why)
        rep.fate_questions = fates.questions
        rep.interrupted = self.stopped_at is not None
        return rep


def run_one(cfg: LoadConfig, index: int, progress: Any = None, stop: Any = None) -> Report:
    """One generator process's load. ``progress`` (a queue) gets ``progress_item`` once a
    second; ``stop`` (a ``StopFlag`` or anything truthy when set) ends the run early with a
    partial report. After the load, the fates still open are asked until ``cfg.fate_wait``."""
    return LoadProcess(cfg, index, progress, stop).run()

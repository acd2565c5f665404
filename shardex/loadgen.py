"""Load generator: open loop (fixed rate) or closed loop (concurrency × window), HDR latencies.

Open loop measures latency from each command's *intended* send time, so a stall of the system
delays every command scheduled behind it and shows in the tail (no coordinated omission).
Closed loop keeps C connections each with W frames of B commands in flight and measures the
frame round trip for each command in it.

The generator is deliberately cheap (pre-sized random choices, engine tuples straight to msgpack)
so that one process drives well over 100k orders/s; ``procs`` runs several generator processes
and merges their HDR histograms.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import select
import signal
import struct
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import zmq
from hdrh.histogram import HdrHistogram

from shardex.engine import DEFAULT_MARKETS
from shardex.engine.codes import (
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_REJECTED,
    EV_TRADE,
    GTC,
    IOC,
    LIMIT,
    MARKET,
    OP_AMEND,
    OP_CANCEL,
    OP_NEW,
)
from shardex.metrics import reject_class
from shardex.protocol import decode_reply, encode_request, shard_for

HIST_MAX_US = 60_000_000
DEFAULT_MIX = "limit=60,market=5,cancel=30,amend=5"
_REQ = struct.Struct("<Q")


class LoadError(Exception):
    """A problem the user can fix (bad endpoint, bad option); the message says which."""


def parse_mix(text: str) -> dict[str, int]:
    mix: dict[str, int] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in ("limit", "market", "cancel", "amend"):
            raise LoadError(f"--mix: unknown kind {name!r} (limit, market, cancel, amend)")
        try:
            mix[name] = int(weight)
        except ValueError:
            raise LoadError(f"--mix: weight of {name} must be an integer, got {weight!r}") from None
        if mix[name] < 0:
            raise LoadError(f"--mix: weight of {name} must be >= 0")
    if sum(mix.values()) <= 0:
        raise LoadError("--mix: weights must add up to more than 0")
    return mix


@dataclass
class LoadConfig:
    endpoint: str
    rate: float | None = None  # orders/s offered (open loop); None: closed loop
    concurrency: int = 1
    window: int = 8
    batch: int = 100
    duration: float | None = 10.0
    orders: int | None = None
    symbols: int = 2
    accounts: int = 100
    mix: dict[str, int] = field(default_factory=lambda: parse_mix(DEFAULT_MIX))
    seed: int = 1
    direct: bool = False
    procs: int = 1
    timeout: float = 5.0


@dataclass
class Report:
    sent: int = 0
    acked: int = 0  # commands that got their reply (any outcome)
    accepted: int = 0
    trades: int = 0
    cancelled: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # engine rejects by class
    errors: dict[str, int] = field(default_factory=dict)  # batch errors / timeouts
    seconds: float = 0.0
    hist: Any = None

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "hist"}
        d["timeouts"] = sum(v for k, v in self.errors.items() if k.startswith("timeout"))
        d["acked_per_s"] = round(self.acked / self.seconds) if self.seconds else 0
        h = self.hist
        d["latency_us"] = (
            {
                "p50": h.get_value_at_percentile(50),
                "p90": h.get_value_at_percentile(90),
                "p99": h.get_value_at_percentile(99),
                "p99.9": h.get_value_at_percentile(99.9),
                "p99.99": h.get_value_at_percentile(99.99),
                "max": h.get_max_value(),
            }
            if h is not None and h.get_total_count()
            else {}
        )
        return d


class Generator:
    """Cheap, seeded order flow over the first K default markets."""

    def __init__(self, cfg: LoadConfig, prefix: str) -> None:
        self.rng = random.Random(cfg.seed)
        names = list(DEFAULT_MARKETS)
        if not 1 <= cfg.symbols <= len(names):
            raise LoadError(f"--symbols must be 1..{len(names)} (the built-in markets)")
        self.symbols = names[: cfg.symbols]
        self.accounts = [f"lg-{i}" for i in range(max(1, cfg.accounts))]
        self.mid = {s: DEFAULT_MARKETS[s].max_price_ticks // 200 for s in self.symbols}
        self.unit = {}
        for s in self.symbols:
            lot = DEFAULT_MARKETS[s].lot
            self.unit[s] = max(1, int(1 / lot) // 100) if lot < 1 else 1
        kinds = []
        for kind, w in cfg.mix.items():
            kinds += [kind] * w
        self.kinds = kinds
        self.prefix = prefix
        self.n = 0
        self.live: list[tuple[str, str, str]] = []  # (symbol, id, account) of resting orders

    def next(self) -> tuple:
        rng = self.rng
        kind = self.kinds[int(rng.random() * len(self.kinds))]
        if kind in ("cancel", "amend") and self.live:
            i = int(rng.random() * len(self.live))
            self.live[i], self.live[-1] = self.live[-1], self.live[i]
            sym, oid, acct = self.live.pop() if kind == "cancel" else self.live[-1]
            if kind == "cancel":
                return (OP_CANCEL, sym, oid, acct)
            return (OP_AMEND, sym, oid, acct, self.unit[sym], None)
        self.n += 1
        sym = self.symbols[int(rng.random() * len(self.symbols))]
        side = 0 if rng.random() < 0.5 else 1
        acct = self.accounts[int(rng.random() * len(self.accounts))]
        qty = self.unit[sym] * (1 + int(rng.random() * 10))
        oid = f"{self.prefix}{self.n}"
        if kind == "market":
            return (OP_NEW, sym, oid, acct, side, MARKET, None, qty, IOC, False, 0)
        off = int(rng.random() * 20) - 2  # mostly passive, some crossing
        price = self.mid[sym] - off if side == 0 else self.mid[sym] + off
        if len(self.live) < 100_000:
            self.live.append((sym, oid, acct))
        return (OP_NEW, sym, oid, acct, side, LIMIT, price, qty, GTC, False, 0)


def _connect(cfg: LoadConfig, ctx: zmq.Context) -> tuple[list[zmq.Socket], int]:
    """Sockets (per connection; per shard when direct) and the shard count from the router."""
    probe = ctx.socket(zmq.DEALER)
    probe.setsockopt(zmq.LINGER, 0)
    probe.setsockopt(zmq.IMMEDIATE, 1)
    probe.setsockopt(zmq.SNDTIMEO, int(cfg.timeout * 1000))
    try:
        probe.connect(cfg.endpoint)
    except zmq.ZMQError as exc:
        raise LoadError(f"bad endpoint {cfg.endpoint!r}: {exc}") from None
    try:
        probe.send_multipart([b"", b"topo", encode_request([])])
        if not probe.poll(int(cfg.timeout * 1000)):
            raise LoadError(f"no answer from a router at {cfg.endpoint} within {cfg.timeout}s")
        error, results = decode_reply(probe.recv_multipart()[1])
    except zmq.Again:
        raise LoadError(
            f"cannot reach {cfg.endpoint} within {cfg.timeout}s (is the cluster running?)"
        ) from None
    finally:
        probe.close(0)
    if error is not None:
        raise LoadError(f"router at {cfg.endpoint} answered: {error}")
    info = results[0]
    shards = info["shards"]
    eps = [t.get("direct") for t in info["topology"]] if cfg.direct else [cfg.endpoint]
    if cfg.direct and not all(eps):
        raise LoadError("not every shard has registered a direct endpoint yet")
    socks = []
    for _ in range(max(1, cfg.concurrency)):
        for ep in eps:
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 0)
            s.setsockopt(zmq.RCVHWM, 0)
            s.connect(ep)
            socks.append(s)
    return socks, shards


def run_one(cfg: LoadConfig, index: int, progress: Any = None) -> Report:
    """One generator process's load; ``progress`` (a queue) gets (sent, acked, errors, p99)."""
    ctx = zmq.Context()
    socks, shards = _connect(cfg, ctx)
    per_conn = len(socks) // max(1, cfg.concurrency)
    gen = Generator(cfg, prefix=f"g{index}-{os.getpid()}-{cfg.seed}-")
    hist = HdrHistogram(1, HIST_MAX_US, 3)
    rep = Report(hist=hist)
    rejected: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    uniq = list(dict.fromkeys(socks))
    fds = [s.getsockopt(zmq.FD) for s in uniq]
    inflight: dict[bytes, tuple[list[tuple], Any, int]] = {}  # req → (cmds, sent times, conn)
    per_sock_inflight = [0] * len(socks)
    reqn = 0
    limit_orders = cfg.orders if cfg.orders is not None else None
    rate = cfg.rate / max(1, cfg.procs) if cfg.rate else None
    time.sleep(0.2)  # let connections establish
    t0 = time.perf_counter()
    end = t0 + cfg.duration if cfg.duration else None
    clock = time.perf_counter
    last_progress = t0
    sent_cmds = 0

    def target(cmd: tuple, conn: int) -> tuple[int, int]:
        """(socket index, shard): a frame must hold commands of one shard only, because the
        router routes a whole frame by its key and a shard rejects pairs it does not own."""
        shard = shard_for(cmd[1], shards)
        return (conn if per_conn == 1 else conn * per_conn + shard), shard

    def send(sock_i: int, cmds: list[tuple], stamps: Any) -> None:
        nonlocal reqn
        reqn += 1
        req = _REQ.pack(reqn)
        key = cmds[0][1].encode()
        socks[sock_i].send_multipart([key, req, encode_request(cmds)])
        inflight[req] = (cmds, stamps, sock_i)
        per_sock_inflight[sock_i] += 1

    def handle(frames: list[bytes]) -> None:
        entry = inflight.pop(frames[0], None)
        if entry is None:
            return
        cmds, stamps, sock_i = entry
        per_sock_inflight[sock_i] -= 1
        now = clock()
        n = len(cmds)
        if isinstance(stamps, float):
            hist.record_value(max(1, int((now - stamps) * 1e6)), n)
        else:
            for t in stamps:
                hist.record_value(max(1, int((now - t) * 1e6)))
        error, results = decode_reply(frames[1])
        if error is not None:
            errors[error] += n
            return
        rep.acked += n
        for evs in results:
            for ev in evs:
                kind = ev[0]
                if kind == EV_ACCEPTED:
                    rep.accepted += 1
                elif kind == EV_TRADE:
                    rep.trades += 1
                elif kind == EV_CANCELLED:
                    rep.cancelled += 1
                elif kind == EV_REJECTED:
                    rejected[reject_class(ev[4])] += 1

    def expire(now: float) -> None:
        for req, (cmds, stamps, sock_i) in list(inflight.items()):
            first = stamps if isinstance(stamps, float) else stamps[0]
            if now - first > cfg.timeout:
                del inflight[req]
                per_sock_inflight[sock_i] -= 1
                errors[f"timeout after {cfg.timeout}s"] += len(cmds)

    def done_sending(now: float) -> bool:
        if limit_orders is not None and sent_cmds >= limit_orders:
            return True
        return end is not None and now >= end

    next_i = 0  # open loop: index of the next scheduled command
    while True:
        now = clock()
        if not done_sending(now):
            if rate:
                due = int((now - t0) * rate) + 1  # command i is due at t0 + i / rate
                if limit_orders is not None:
                    due = min(due, limit_orders)
                while next_i < due:
                    # one frame per target socket holding every command now due (≤ batch)
                    groups: dict[tuple[int, int], tuple[list[tuple], list[float]]] = {}
                    count = 0
                    while next_i < due and count < cfg.batch:
                        cmd = gen.next()
                        g = groups.setdefault(
                            target(cmd, next_i % max(1, cfg.concurrency)), ([], [])
                        )
                        g[0].append(cmd)
                        g[1].append(t0 + next_i / rate)
                        next_i += 1
                        count += 1
                    for (si, _), (cmds, stamps) in groups.items():
                        send(si, cmds, stamps)
                        sent_cmds += len(cmds)
            else:
                for conn in range(max(1, cfg.concurrency)):
                    base = conn * per_conn
                    while sum(per_sock_inflight[base : base + per_conn]) < cfg.window:
                        n = cfg.batch
                        if limit_orders is not None:
                            n = min(n, limit_orders - sent_cmds)
                            if n <= 0:
                                break
                        by_target: dict[tuple[int, int], list[tuple]] = {}
                        for _ in range(n):
                            cmd = gen.next()
                            by_target.setdefault(target(cmd, conn), []).append(cmd)
                        stamp = clock()
                        for (si, _), cmds in by_target.items():
                            send(si, cmds, stamp)
                        sent_cmds += n
        elif not inflight:
            break
        got_any = False
        for sock in uniq:
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                handle(frames)
                got_any = True
        if not got_any:
            # Sleep until the next command is due or a reply may have arrived: select on the
            # sockets' FDs has µs resolution (zmq_poll has ms), so open-loop sends are not late
            # and the generator does not spin on the cores it is measuring.
            if rate and not done_sending(clock()):
                wait = min(0.05, t0 + next_i / rate - clock())
            else:
                wait = 0.05
            if wait > 0:
                select.select(fds, [], [], wait)
        now = clock()
        if done_sending(now) and inflight:
            expire(now)
        if progress is not None and now - last_progress >= 1.0:
            progress.put(
                (
                    index,
                    sent_cmds,
                    rep.acked,
                    sum(errors.values()),
                    hist.get_value_at_percentile(99),
                )
            )
            last_progress = now
        if done_sending(now) and not inflight:
            break
    rep.seconds = clock() - t0
    rep.sent = sent_cmds
    rep.rejected = dict(rejected)
    rep.errors = dict(errors)
    for s in socks:
        s.close(0)
    ctx.term()
    return rep


def _child(cfg: LoadConfig, index: int, progress: Any, results: Any) -> None:
    try:
        rep = run_one(cfg, index, progress)
        d = rep.to_dict()
        d["hist"] = rep.hist.encode()
        results.put(("ok", d))
    except LoadError as exc:
        results.put(("error", str(exc)))
    except Exception as exc:  # reported to the parent, which exits non-zero with it
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def run(cfg: LoadConfig, on_progress=None) -> Report:
    """Run ``cfg.procs`` generator processes and merge their reports."""
    ctx = mp.get_context("fork")
    progress: Any = ctx.Queue()
    results: Any = ctx.Queue()
    procs = []
    for i in range(max(1, cfg.procs)):
        sub = LoadConfig(
            **{
                **asdict(cfg),
                "seed": cfg.seed * 1000 + i,
                "orders": None
                if cfg.orders is None
                else cfg.orders // cfg.procs + (1 if i < cfg.orders % cfg.procs else 0),
            }
        )
        p = ctx.Process(target=_child, args=(sub, i, progress, results), daemon=True)
        p.start()
        procs.append(p)

    def stop(signum, frame):  # noqa: ARG001 - stop the generators with us
        for p in procs:
            p.terminate()
        raise LoadError("interrupted")

    old = signal.signal(signal.SIGTERM, stop)
    try:
        return _collect(procs, progress, results, on_progress)
    finally:
        signal.signal(signal.SIGTERM, old)
        for p in procs:
            if p.is_alive():
                p.terminate()


def _collect(procs: list, progress: Any, results: Any, on_progress) -> Report:
    last: dict[int, tuple] = {}
    got: list[tuple[str, Any]] = []
    t0 = time.monotonic()
    while len(got) < len(procs):
        while not progress.empty():
            item = progress.get()
            last[item[0]] = item[1:]
        if on_progress is not None and last:
            sent = sum(v[0] for v in last.values())
            acked = sum(v[1] for v in last.values())
            errs = sum(v[2] for v in last.values())
            p99 = max(v[3] for v in last.values())
            on_progress(time.monotonic() - t0, sent, acked, errs, p99)
        try:
            got.append(results.get(timeout=1.0))
        except Exception:
            if not any(p.is_alive() for p in procs) and results.empty():
                raise LoadError("a generator process died without a report") from None
    for p in procs:
        p.join(5)
    errors_ = [v for k, v in got if k == "error"]
    if errors_:
        raise LoadError(errors_[0])
    merged = Report(hist=HdrHistogram(1, HIST_MAX_US, 3))
    rej: Counter[str] = Counter()
    errs: Counter[str] = Counter()
    for _, d in got:
        merged.sent += d["sent"]
        merged.acked += d["acked"]
        merged.accepted += d["accepted"]
        merged.trades += d["trades"]
        merged.cancelled += d["cancelled"]
        merged.seconds = max(merged.seconds, d["seconds"])
        rej.update(d["rejected"])
        errs.update(d["errors"])
        merged.hist.add(HdrHistogram.decode(d["hist"]))
    merged.rejected = dict(rej)
    merged.errors = dict(errs)
    return merged

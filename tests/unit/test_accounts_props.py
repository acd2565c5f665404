"""An in-memory venue for the account tier's tests: M account cores, N real engines, the links.

It plays the part of the processes that are not wired yet (router, account shard, engine shard)
with the pure pieces the processes will run: ``AccountCore``, ``Engine``, ``SettlementFeed`` and
the link ``Inbox`` on the engine side. Every link is a FIFO the test pumps in any order, every
message sent is logged (the sender's ring/journal, from which a gap is repaired), and every
component keeps a snapshot + the journal of its inputs since, so a "crash" is: restore the
snapshot, replay the journal, and check the result is the state it had.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import msgpack
from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st

from shardex.accounts import AccountCore, Fee, SettlementFeed, account_shard_for
from shardex.accounts.codes import (
    A_AMEND,
    A_DEPOSIT,
    A_FEE_GROUP,
    A_NEW,
    A_WITHDRAW,
    AE_ANOMALY,
    AE_BALANCE,
    AE_FORWARD,
    AE_GAP,
    AE_REJECTED,
    AE_REPEATED,
    REJ_INSUFFICIENT_FUNDS,
    S_TRADE,
)
from shardex.accounts.fees import FeeSchedule, Tier
from shardex.accounts.link import APPLY, DUPLICATE, Inbox
from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.codes import BUY, FOK, GTC, IOC, LIMIT, MARKET
from shardex.wire.protocol import shard_for
from tests.support.depth import examples

MARKETS = {s: DEFAULT_MARKETS[s] for s in ("BTC-USD", "ETH-USD", "ETH-BTC")}
FEES = {"BTC-USD": Fee(2, 5), "ETH-USD": Fee(0, 10), "ETH-BTC": Fee(3, 3)}
# Fee tiers: FEES as the default tier, and a market makers' tier with rebates as large as the
# rule allows (-maker = the market's lowest taker rate), given to two accounts by group
SCHEDULE = FeeSchedule.build(
    [Tier("base", FEES), Tier("mm", {"BTC-USD": Fee(-5, 6), "ETH-USD": Fee(-10, 10),
                                     "ETH-BTC": Fee(-3, 4)})], sorted(MARKETS))  # fmt: skip
MAKERS = ("bob", "dave")


def frozen(state: Any) -> Any:
    """A snapshot as the processes store it: through msgpack, so that it shares nothing with
    the live state (an in-memory copy could alias lists) and is proven msgpack-able."""
    return msgpack.unpackb(msgpack.packb(state), strict_map_key=False)


class EngineSide:
    """One engine shard: the engine, its settlement feed, the inbox of forwards, its journal."""

    def __init__(self, i: int, m: int) -> None:
        self.i = i
        self.engine = Engine(MARKETS)
        self.feed = SettlementFeed(i, m)
        self.inbox = Inbox()
        self.snap = self._snapshot()
        self.journal: list[tuple[Any, int | None]] = []  # (cmd, cause) since snap

    def _snapshot(self) -> tuple:
        return (frozen(self.engine.snapshot()), frozen(self.feed.snapshot()), dict(self.inbox.last))

    def run(self, cmd: tuple, cause: int | None) -> list[tuple[int, tuple]]:
        self.journal.append((cmd, cause))
        events: list[tuple] = []
        self.engine.apply(cmd, events)
        return self.feed.route(cmd, events, cause)

    def checkpoint(self) -> None:
        self.snap = self._snapshot()
        self.journal = []

    def crash(self) -> list[tuple[int, tuple]]:
        """Restore + replay; return the settlements the replay re-sent (they must be
        duplicates of what was sent before)."""
        eng, feed, inbox = self.snap
        self.engine = Engine.restore(eng, MARKETS)
        self.feed = SettlementFeed.restore(feed)
        self.inbox = Inbox(inbox)
        journal, self.journal = self.journal, []
        resent = []
        for cmd, cause in journal:
            if cause is not None:
                self.inbox.applied(cmd_sender(cmd, self), cause)
            resent.extend(self.run(cmd, cause))
        return resent


def cmd_sender(cmd: tuple, side: EngineSide) -> int:
    """The account shard a forwarded command came from (its account's shard)."""
    return account_shard_for(cmd[3], side.feed.shards)


class Venue:
    def __init__(self, m: int, n: int) -> None:
        self.m, self.n = m, n
        route = self.engine_for = lambda s: shard_for(s, n)  # noqa: E731
        self.cores = [AccountCore(MARKETS, j, m, FEES, route, schedule=SCHEDULE)
                      for j in range(m)]  # fmt: skip
        self.core_snap = [frozen(c.snapshot()) for c in self.cores]
        self.core_journal: list[list[tuple]] = [[] for _ in range(m)]
        self.core_events: list[list[tuple]] = [[] for _ in range(m)]  # since snap
        self.engines = [EngineSide(i, m) for i in range(n)]
        self.fwd: dict[tuple[int, int], deque] = {
            (j, i): deque() for j in range(m) for i in range(n)
        }
        self.settle: dict[tuple[int, int], deque] = {
            (i, j): deque() for i in range(n) for j in range(m)
        }
        self.fwd_log: dict[tuple[int, int], list] = {k: [] for k in self.fwd}
        self.settle_log: dict[tuple[int, int], list] = {k: [] for k in self.settle}
        self.deposits: dict[str, int] = {}
        self.withdrawals: dict[str, int] = {}
        self.rejects: list[tuple] = []
        self.repeated = 0

    # -------------------------------------------------------------- account side

    def core_of(self, account: str) -> int:
        return account_shard_for(account, self.m)

    def client(self, cmd: tuple, j: int | None = None) -> list[tuple]:
        """A client command into the account shard of its account (or ``j``)."""
        if j is None:
            j = self.core_of(cmd[1] if cmd[0] in (A_DEPOSIT, A_WITHDRAW) else cmd[3])
        return self._core_apply(j, cmd)

    def _core_apply(self, j: int, cmd: tuple) -> list[tuple]:
        out: list[tuple] = []
        self.core_journal[j].append(cmd)
        self.cores[j].apply(cmd, out)
        self.core_events[j].extend(out)
        for ev in out:
            self._core_event(j, cmd, ev)
        return out

    def _core_event(self, j: int, cmd: tuple, ev: tuple) -> None:
        kind = ev[0]
        if kind == AE_FORWARD:
            _, seq, i, prev, fcmd = ev
            self.fwd[(j, i)].append((seq, prev, fcmd))
            self.fwd_log[(j, i)].append((seq, prev, fcmd))
        elif kind == AE_BALANCE and ev[6] in ("deposit", "withdraw"):
            book = self.deposits if ev[6] == "deposit" else self.withdrawals
            book[cmd[2]] = book.get(cmd[2], 0) + cmd[3]
        elif kind == AE_REJECTED:
            self.rejects.append(ev)
        elif kind == AE_REPEATED:
            self.repeated += 1
        elif kind == AE_GAP:
            _, _, i, have, _prev, _eseq = ev
            # The caller repairs: re-send everything after ``have`` on that link, in order.
            for msg in [m for m in self.settle_log[(i, j)] if m[2] > have]:
                self._core_apply(j, msg)
        elif kind == AE_ANOMALY:
            raise AssertionError(f"core {j}: anomaly {ev}")

    def checkpoint_core(self, j: int) -> None:
        self.core_snap[j] = frozen(self.cores[j].snapshot())
        self.core_journal[j] = []
        self.core_events[j] = []

    def crash_core(self, j: int) -> None:
        """kill -9 + recovery: snapshot + journal replay gives the same state and the same
        events (so what was sent before the crash is re-sent identically: duplicates)."""
        before = self.cores[j].snapshot()
        core = AccountCore.restore(self.core_snap[j], MARKETS, FEES, self.engine_for,
                                   schedule=SCHEDULE)  # fmt: skip
        out: list[tuple] = []
        for cmd in self.core_journal[j]:
            core.apply(cmd, out)
        assert out == self.core_events[j], "replay emitted other events"
        assert frozen(core.snapshot()) == frozen(before), "replay reached another state"
        self.cores[j] = core
        # Re-sent forwards reach the engine shards again: they must be skipped.
        for ev in out:
            if ev[0] == AE_FORWARD:
                _, seq, i, prev, fcmd = ev
                self.fwd[(j, i)].append((seq, prev, fcmd))

    # -------------------------------------------------------------- engine side

    def pump_fwd(self, j: int, i: int) -> None:
        q = self.fwd[(j, i)]
        if not q:
            return
        seq, prev, fcmd = q.popleft()
        side = self.engines[i]
        verdict = side.inbox.check(j, seq, prev)
        if verdict == DUPLICATE:
            return
        if verdict != APPLY:  # a gap: re-send from the account shard's log
            have = side.inbox.last.get(j, 0)
            for s, _p, c in [x for x in self.fwd_log[(j, i)] if x[0] > have]:
                self._engine_apply(i, j, s, c)
            return
        self._engine_apply(i, j, seq, fcmd)

    def _engine_apply(self, i: int, j: int, seq: int, fcmd: tuple) -> None:
        side = self.engines[i]
        side.inbox.applied(j, seq)
        self._settlements(i, side.run(fcmd, seq))

    def cancel(self, symbol: str, oid: str, account: str) -> None:
        """Cancels go straight to the engine shard (no hold to take)."""
        i = self.engine_for(symbol)
        self._settlements(i, self.engines[i].run((2, symbol, oid, account), None))

    def _settlements(self, i: int, msgs: list[tuple[int, tuple]]) -> None:
        for j, msg in msgs:
            self.settle[(i, j)].append(msg)
            self.settle_log[(i, j)].append(msg)

    def crash_engine(self, i: int) -> None:
        side = self.engines[i]
        before = side._snapshot()
        sent_since = {k: list(v) for k, v in self.settle_log.items() if k[0] == i}
        resent = side.crash()
        after = side._snapshot()
        for name, a, b in zip(("engine", "feed", "inbox"), before, after, strict=True):
            assert a == b, f"engine shard {i}: replay reached another {name} state: {a} != {b}"
        for j, msg in resent:
            assert msg in sent_since[(i, j)], f"replay sent a new settlement {msg}"
            self.settle[(i, j)].append(msg)  # duplicates: the core must skip them

    def pump_settle(self, i: int, j: int) -> None:
        q = self.settle[(i, j)]
        if q:
            self._core_apply(j, q.popleft())

    # -------------------------------------------------------------- checks

    def busy(self) -> bool:
        return any(self.fwd.values()) or any(self.settle.values())

    def drain(self) -> None:
        while self.busy():
            for (j, i), q in self.fwd.items():
                while q:
                    self.pump_fwd(j, i)
            for (i, j), q in self.settle.items():
                while q:
                    self.pump_settle(i, j)

    def clone(self) -> Venue:
        """A deep copy through the components' own snapshot/restore (which tests them too)."""
        v = Venue.__new__(Venue)
        v.__dict__.update(self.__dict__)
        v.cores = [AccountCore.restore(frozen(c.snapshot()), MARKETS, FEES, self.engine_for,
                                       schedule=SCHEDULE) for c in self.cores]  # fmt: skip
        v.core_journal = [list(x) for x in self.core_journal]
        v.core_events = [list(x) for x in self.core_events]
        v.engines = []
        for side in self.engines:
            s = EngineSide.__new__(EngineSide)
            s.__dict__.update(side.__dict__)
            s.engine = Engine.restore(frozen(side.engine.snapshot()), MARKETS)
            s.feed = SettlementFeed.restore(frozen(side.feed.snapshot()))
            s.inbox = Inbox(side.inbox.last)
            s.journal = list(side.journal)
            v.engines.append(s)
        v.fwd = {k: deque(q) for k, q in self.fwd.items()}
        v.settle = {k: deque(q) for k, q in self.settle.items()}
        v.fwd_log = {k: list(q) for k, q in self.fwd_log.items()}
        v.settle_log = {k: list(q) for k, q in self.settle_log.items()}
        v.deposits, v.withdrawals = dict(self.deposits), dict(self.withdrawals)
        v.rejects = list(self.rejects)
        return v

    def check_local(self) -> None:
        """What holds at every instant: each core's own books balance (nothing negative, held
        == Σ what its open orders can still cost, conservation with its net trade inflow)."""
        for core in self.cores:
            core.check_integrity()

    def check_global(self) -> None:
        """Once every message in flight is delivered (on a clone, so the run goes on with its
        interleaving): per asset Σ(available + held) + fees == deposits - withdrawals, and
        each core's open orders are exactly the engines' live orders (open qty, price)."""
        v = self.clone()
        v.drain()
        v.check_local()
        for asset in v.cores[0].table.units:
            total = sum(
                sum(cell[0] + cell[1] for acct in c.balances.values()
                    for a, cell in acct.items() if a == asset) + c.fees.get(asset, 0)
                for c in v.cores
            )  # fmt: skip
            expect = v.deposits.get(asset, 0) - v.withdrawals.get(asset, 0)
            assert total == expect, f"{asset}: balances + fees {total} != in - out {expect}"
            assert sum(c.flow.get(asset, 0) for c in v.cores) == 0, f"{asset}: flows do not net"
            # rebates included, the venue never pays out more than it takes
            assert sum(c.fees.get(asset, 0) for c in v.cores) >= 0, f"{asset}: fees net < 0"
        live = {}
        for side in v.engines:
            for symbol, book in side.engine.books.items():
                for oid, o in book.orders.items():
                    live[(o.account, symbol, oid)] = (o.qty, o.price)
        held = {key: (o.rem, o.price) for c in v.cores for key, o in c.orders.items()}
        assert held == live, f"open orders differ: accounts {held}, engines {live}"


# ---------------------------------------------------------------------- the property test

# Kinds of step, repeated by weight.
STEPS = (
    ("deposit",) * 2
    + ("withdraw",)
    + ("new",) * 6
    + ("amend", "cancel")
    + ("cross",) * 2
    + ("pump",) * 5
    + ("drain",) * 2
    + ("resend", "gap", "crash_core", "crash_engine", "checkpoint")
)
ACCOUNTS = ("alice", "bob", "carol", "dave", "erin")
ASSET_STEP = {"USD": 5_000_000, "BTC": 200_000, "ETH": 300}  # deposit grain, in units
MID = {"BTC-USD": 3_000_000, "ETH-USD": 200_000, "ETH-BTC": 5_000}
PRICE_STEP = {"BTC-USD": 500, "ETH-USD": 100, "ETH-BTC": 10}


def _new_order(data: st.DataObject, n: int, ids: list) -> tuple:
    symbol = data.draw(st.sampled_from(sorted(MARKETS)))
    oid = data.draw(st.sampled_from(ids)) if ids and data.draw(st.integers(0, 9)) == 0 else f"o{n}"
    account = data.draw(st.sampled_from(ACCOUNTS))
    side = data.draw(st.integers(0, 1))
    market = data.draw(st.integers(0, 4)) == 0
    qty = data.draw(st.integers(1, 6))
    stp = data.draw(st.integers(0, 3))
    if market:
        tif = data.draw(st.sampled_from((IOC, FOK)))
        budget = None
        if side == BUY:
            top = MID[symbol] + 4 * PRICE_STEP[symbol]
            pair = FEES[symbol]
            per = qty * AccountCore(MARKETS).table.pairs[symbol].quote_per_tick_lot
            budget = data.draw(st.integers(1, top * per * (10_000 + pair.taker_bps) // 10_000 + 1))
        return (A_NEW, symbol, oid, account, side, MARKET, None, qty, tif, False, stp, budget)
    price = MID[symbol] + data.draw(st.integers(-4, 4)) * PRICE_STEP[symbol]
    tif = data.draw(st.sampled_from((GTC, GTC, GTC, IOC, FOK)))
    post_only = tif == GTC and data.draw(st.integers(0, 5)) == 0
    return (A_NEW, symbol, oid, account, side, LIMIT, price, qty, tif, post_only, stp, None)


def _cross(v: Venue, placed: list, ids: list, step: int, other: Any, qty: int) -> bool:
    """Place an order of another account (``other(accounts)`` picks it) on the other side of,
    at the price of, the newest limit order held on the account shard of the last order
    placed: once both reach the engine shard, trades happen. False: no such order."""
    held = v.cores[v.core_of(placed[-1][2])].orders
    opposite = [(k, o) for k, o in held.items() if o.price is not None]
    if not opposite:
        return False
    (acct, symbol, _), o = opposite[-1]
    oid = f"x{step}"
    cmd = (A_NEW, symbol, oid, other([a for a in ACCOUNTS if a != acct]), o.side ^ 1, LIMIT,
           o.price, qty, GTC, False, 0, None)  # fmt: skip
    ids.append(oid)
    placed.append((symbol, oid, cmd[3]))
    v.client(cmd)
    return True


def _trades(v: Venue) -> int:
    return sum(1 for log in v.settle_log.values() for msg in log if msg[0] == S_TRADE)


def test_a_cross_step_makes_trades_that_settle():
    """The property's ``cross`` step, on a fixed start: it must trade (a property whose trading
    step never runs, or never trades, checks conservation of nothing but deposits)."""
    assert "cross" in STEPS  # the property draws it (it once was not among the steps)
    v = Venue(2, 2)
    v.client((A_DEPOSIT, "alice", "USD", 50 * ASSET_STEP["USD"], "fund-a"))
    v.client((A_DEPOSIT, "bob", "BTC", 50 * ASSET_STEP["BTC"], "fund-b"))
    buy = (A_NEW, "BTC-USD", "o1", "alice", BUY, LIMIT, MID["BTC-USD"], 3, GTC, False, 0, None)
    v.client(buy)
    v.drain()
    placed, ids = [("BTC-USD", "o1", "alice")], ["o1"]
    assert _cross(v, placed, ids, 2, lambda accounts: "bob", 2)
    assert placed[-1] == ("BTC-USD", "x2", "bob")
    v.drain()
    assert _trades(v) > 0, "the cross step traded nothing"
    v.check_global()
    (alice_order,) = v.cores[v.core_of("alice")].orders.values()
    assert alice_order.rem == 1  # 2 of its 3 lots filled by bob's crossing sell


# Per example of the property below (its wrapper test counts them): (did a cross step find an
# order to cross, settled trades).
_SEEN: list[tuple[bool, int]] = []
_REBATED: list[bool] = []  # per example: a maker rebate was paid


def test_money_is_conserved_under_random_interleavings() -> None:
    """The property below, then a count over its examples: in a good share of them a cross
    step placed an order against a resting one, and trades settled (a property whose trading
    step is never drawn checks conservation of little more than deposits). About 3 in 4
    examples do each, seen over several runs: a quarter is the floor."""
    _SEEN.clear()
    _REBATED.clear()
    _money_is_conserved_under_random_interleavings()
    crossed = sum(1 for c, _ in _SEEN if c)
    traded = sum(1 for _, n in _SEEN if n)
    assert len(_SEEN) >= 20, _SEEN
    assert crossed * 4 >= len(_SEEN), f"a cross step crossed in {crossed} of {len(_SEEN)}"
    assert traded * 4 >= len(_SEEN), f"only {traded} of {len(_SEEN)} examples settled a trade"
    # (rebates: 3 to 34 of 40 examples over runs of the same code, as hypothesis's generation
    # goes; a floor of 1 in 10 failed in CI at 3. Some example must pay one.)
    assert sum(_REBATED) >= 1, f"rebates paid in {sum(_REBATED)} of {len(_REBATED)} examples"


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def _money_is_conserved_under_random_interleavings(data: st.DataObject) -> None:
    """Deposits, withdrawals, orders (limit/market/IOC/FOK/post-only/STP), amends, cancels,
    message deliveries in any order per link, re-sent ranges, out-of-order deliveries (gaps),
    crashes of account and engine shards with recovery by snapshot + journal replay: after every
    step every core's books balance, and once in-flight messages land, money is conserved
    across shards and holds match the engines' live orders exactly."""
    m = data.draw(st.integers(1, 3), label="account shards")
    n = data.draw(st.integers(1, 2), label="engine shards")
    v = Venue(m, n)
    placed: list[tuple[str, str, str]] = []  # (symbol, id, account) of every new sent
    ids: list[str] = []
    for acct in MAKERS:
        v.client((A_FEE_GROUP, acct, "mm"), v.core_of(acct))  # (journaled: crashes replay it)
    for k, acct in enumerate(ACCOUNTS):  # fund most accounts, so that most orders are held
        for asset, grain in sorted(ASSET_STEP.items()):
            amount = grain * data.draw(st.integers(0, 60), label="funding")
            if amount:
                v.client((A_DEPOSIT, acct, asset, amount, f"fund-{k}-{asset}"))
    steps = data.draw(st.integers(10, 70), label="steps")
    crossed_any = False
    for step in range(steps):
        what = data.draw(st.sampled_from(STEPS))
        if what in ("deposit", "withdraw"):
            asset = data.draw(st.sampled_from(sorted(ASSET_STEP)))
            amount = ASSET_STEP[asset] * data.draw(st.integers(1, 40))
            acct = data.draw(st.sampled_from(ACCOUNTS))
            ref = f"r{step}" if data.draw(st.integers(0, 5)) else f"r{max(0, step - 1)}"
            v.client((A_DEPOSIT if what == "deposit" else A_WITHDRAW, acct, asset, amount, ref))
        elif what == "new":
            cmd = _new_order(data, step, ids)
            ids.append(cmd[2])
            placed.append((cmd[1], cmd[2], cmd[3]))
            v.client(cmd)
        elif what == "cross" and placed:
            # An order of another account against one resting: trades happen.
            qty = data.draw(st.integers(1, 6))
            crossed = _cross(v, placed, ids, step, lambda a: data.draw(st.sampled_from(a)), qty)
            event(f"a cross step found an order to cross: {crossed}")
            crossed_any = crossed_any or crossed
        elif what in ("amend", "cancel") and placed:
            symbol, oid, acct = data.draw(st.sampled_from(placed))
            if what == "cancel":
                v.cancel(symbol, oid, acct)
            else:
                qty = data.draw(st.one_of(st.none(), st.integers(1, 6)))
                price = data.draw(st.one_of(st.none(), st.integers(-4, 4)))
                if qty is None and price is None:
                    qty = 1
                if price is not None:
                    price = MID[symbol] + price * PRICE_STEP[symbol]
                v.client((A_AMEND, symbol, oid, acct, qty, price))
        elif what == "pump":
            links = [("f", k) for k, q in v.fwd.items() if q]
            links += [("s", k) for k, q in v.settle.items() if q]
            if links:
                kind, key = data.draw(st.sampled_from(links))
                for _ in range(data.draw(st.integers(1, 4))):
                    (v.pump_fwd if kind == "f" else v.pump_settle)(*key)
        elif what == "resend":
            logs = [k for k, log in v.settle_log.items() if log]
            if logs:
                i, j = data.draw(st.sampled_from(logs))
                log = v.settle_log[(i, j)]
                lo = data.draw(st.integers(0, len(log) - 1))
                hi = data.draw(st.integers(lo, len(log) - 1))
                delivered = v.cores[j].inbox.last.get(i, 0)
                before = v.cores[j].snapshot()
                for msg in log[lo : hi + 1]:
                    if msg[2] <= delivered:  # a re-sent range of what was applied: skipped
                        out = v._core_apply(j, msg)
                        assert out == []
                assert v.cores[j].snapshot() == before, "a re-sent range changed the state"
        elif what == "gap":
            # A message delivered ahead of one before it: reported as a gap, nothing applied,
            # then repaired by the sender re-sending the range (what the venue does on AE_GAP).
            ahead = [
                (k, msg)
                for k, q in v.settle.items()
                for msg in list(q)[1:]
                if msg[3] != v.cores[k[1]].inbox.last.get(k[0], 0)
                and msg[2] > v.cores[k[1]].inbox.last.get(k[0], 0)
            ]
            if ahead:
                (i, j), msg = data.draw(st.sampled_from(ahead))
                have = v.cores[j].inbox.last.get(i, 0)
                out = v._core_apply(j, msg)
                assert out and out[0][0] == AE_GAP and out[0][3] == have
        elif what == "crash_core":
            v.crash_core(data.draw(st.integers(0, m - 1)))
        elif what == "crash_engine":
            v.crash_engine(data.draw(st.integers(0, n - 1)))
        elif what == "drain":
            v.drain()
        elif what == "checkpoint":
            j = data.draw(st.integers(0, m - 1))
            v.checkpoint_core(j)
            v.engines[data.draw(st.integers(0, n - 1))].checkpoint()
        v.check_local()
        v.check_global()
    trades = _trades(v)
    _SEEN.append((crossed_any, trades))
    _REBATED.append(any(sum(c.rebates.values()) for c in v.cores))
    target(float(trades), label="settled trades")  # steer towards runs that trade much
    event(f"settled trades: {'0' if not trades else '1-9' if trades < 10 else '10+'}")
    event(f"anything refused for funds: {any(r[5] == REJ_INSUFFICIENT_FUNDS for r in v.rejects)}")
    # The end: everything delivered, every open order cancelled → nothing is held anywhere.
    v.drain()
    for side in v.engines:
        for symbol, book in list(side.engine.books.items()):
            for oid, o in list(book.orders.items()):
                v.cancel(symbol, oid, o.account)
    v.drain()
    v.check_global()
    for core in v.cores:
        assert not core.orders
        assert all(cell[1] == 0 for acct in core.balances.values() for cell in acct.values())

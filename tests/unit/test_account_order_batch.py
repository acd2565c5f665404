"""A request of orders only, applied by the account core directly with the machine taking the
events into its rings once after the last (``AccountHandler._orders``), gives what one command
at a time through the machine gave: the same replies, events, forwards, journal (bytes on disk)
and state, for frames that mix plain orders, budget buys, amends, orders the core refuses (no
funds, duplicate ids, unknown markets), orders refused before the core (a malformed order, a
bad budget) and frames with other commands (the one-at-a-time path). Random frames, seeded;
the one-at-a-time path is forced by replacing ``_orders``. ~0.5 s of CPU.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from shardex.accounts.machines import AccountMachineFactory
from shardex.config import load_markets
from shardex.engine.codes import OP_NEW
from shardex.inproc import InProcCluster
from shardex.journal import Journal
from shardex.node.account_service import AccountHandler
from shardex.node.order_service import order
from shardex.wire.protocol import OP_DEPOSIT, command_from_json, encode_request
from tests.support.inproc import plan
from tests.support.inproc import run as run_on

MARKETS = load_markets(None)
ACCOUNTS = ("alice", "bob", "carol")


def _order(rng: random.Random, k: int) -> Any:
    """One client command of a frame: mostly crossing limit orders; some the core refuses,
    some refused before it, budget market buys and amends."""
    account = rng.choice(ACCOUNTS)
    roll = rng.random()
    if roll < 0.04:
        return ("garbage", k)  # (not an order: the frame is not one of orders only)
    if roll < 0.08:  # (a new order of a bad shape: refused before the core)
        return (OP_NEW, "BTC-USD", f"o{k}", account, "sideways")
    if roll < 0.14:
        amend = {"op": "amend", "symbol": "BTC-USD", "account": account,
                 "id": f"o{rng.randrange(k + 1)}", "qty": "0.02"}  # fmt: skip
        return command_from_json(amend, MARKETS)
    obj: dict[str, Any] = {"op": "new", "symbol": "BTC-USD", "account": account,
                           "id": f"o{rng.randrange(k + 1) if roll < 0.2 else k}",
                           "side": rng.choice(("buy", "sell")), "type": "limit",
                           "price": str(rng.choice((99, 100, 101, 5_000_000))),
                           "qty": rng.choice(("0.01", "0.5", "40"))}  # fmt: skip
    if roll > 0.95:
        obj.update(side="buy", type="market", price=None, budget=rng.choice(("500", "x1")))
        del obj["price"]
    if 0.9 < roll <= 0.92:
        obj["symbol"] = "NOPE-USD"
    return command_from_json(obj, MARKETS)


def _run(d: Path, frames: list[list[Any]]) -> tuple[list[bytes], list[tuple], Any, bytes]:
    """Replies, events and final snapshot of one handler over ``frames``; the journal's bytes."""
    machine = AccountMachineFactory(0, 1, lambda _s: 0).new(MARKETS)
    journal = Journal(str(d), MARKETS, fsync="none", machine=AccountMachineFactory(0, 1,
                      lambda _s: 0))  # fmt: skip
    h = AccountHandler(machine, journal, None)
    out: list[tuple] = []
    funding = [(OP_DEPOSIT, a, asset, "1000", f"f-{a}-{asset}") for a in ACCOUNTS
               for asset in ("USD", "BTC")]  # fmt: skip
    replies = [h.handle(encode_request(funding), out, None)]
    for frame in frames:
        replies.append(h.handle(encode_request(frame), out, None))
        journal.commit()
    journal.close()
    data = b"".join(p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file())
    state = machine.snapshot()
    return replies, out, state, data


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_frame_held_at_once_is_what_one_by_one_gave(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    frames, k = [], 0
    for _ in range(100):
        n = rng.choice((1, 2, 5, 20))
        frames.append([_order(rng, k + i) for i in range(n)])
        k += n
    calls = {"orders": 0}
    real = AccountHandler._orders

    def counted(h: AccountHandler, cmds: list[Any], out: list[tuple]) -> Any:
        calls["orders"] += 1
        return real(h, cmds, out)

    monkeypatch.setattr(AccountHandler, "_orders", counted)
    batched = _run(tmp_path / "batched", frames)
    assert calls["orders"] > 50  # (most frames were of orders only)

    def one_at_a_time(h: AccountHandler, cmds: list[Any], out: list[tuple]) -> Any:
        return [order(h, cmd, out) for cmd in cmds]  # (through the machine, as before)

    monkeypatch.setattr(AccountHandler, "_orders", one_at_a_time)
    single = _run(tmp_path / "single", frames)
    assert batched[0] == single[0]  # replies, byte for byte
    assert batched[1] == single[1]  # events (holds, forwards, refusals), in order
    assert batched[2] == single[2]  # the state (balances, orders, rings' forwards)
    assert batched[3] == single[3]  # the journal on disk


def test_the_rings_of_a_live_account_shard_are_its_journals_replayed_one_at_a_time(
    tmp_path: Path,
) -> None:
    """A cluster in one process (journal on): frames of crossing orders (held a request at a
    time) and the engine shard's settlements (applied a link read at a time, the rings filled
    after the read); then the account shard's journal replayed one command at a time through
    the machine gives the same events ring, forward rings and state as the live shard's."""

    async def body(cl: InProcCluster) -> None:
        async with cl.client(timeout=5) as c:
            for account, asset in (("alice", "USD"), ("bob", "BTC")):
                assert (await c.deposit(account, asset, "100000", ref=f"f-{account}")).ok
            for f in range(8):
                account, side = ("alice", "buy") if f % 2 else ("bob", "sell")
                frame = [c.order("BTC-USD", side, "0.01", str(100 + k % 3), account=account)
                         for k in range(20)]  # fmt: skip
                assert all(r.ok for r in await c.submit_many(frame))
            node = cl.accounts[0]
            await cl.until(lambda: node.counts["settlements"] >= 40, what="settlements")
        node.journal.commit()
        live = node.machine
        again = node.journal.recover().engine
        assert live.core.seq == again.core.seq > 200
        assert list(live.events.tail(10_000)) == list(again.events.tail(10_000))
        assert {e: list(r) for e, r in live.rings.items()} == {
            e: list(r) for e, r in again.rings.items()
        }
        assert live.snapshot() == again.snapshot()

    run_on(plan(1, 1, data_dir=str(tmp_path)), body)

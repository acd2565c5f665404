"""The account link checks the sender's token: every link message carries the sending
leader's lease epoch, and the receiver refuses one below the highest it has seen from that
shard (``accounts.link.EpochFence``). A leader paused between its lease-deadline check and its
send (GC, SIGSTOP, a preempted thread) must not have its late messages applied once its
successor has been heard from.

The pure rule, the wire's compatible decoding, and the whole story in one process in virtual
time: the engine shard's leader settles a trade whose settlements stay in the air (the
in-memory transport's shaper: its sends are late), it is frozen, its standby takes over at a
higher epoch and settles the trade from its own history, then the late messages land and the
old leader is thawed: the account shard refuses them (``stale_epoch``) and the money is exact."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from shardex.accounts.link import EpochFence
from shardex.client import Retry, audit_report
from shardex.inproc import InProcCluster
from shardex.wire.link import decode_link, encode_link
from shardex.wire.protocol import LINK_FWD, LINK_SETTLE, packb
from tests.support.inproc import Hold, plan, run_virtual

pytestmark = pytest.mark.timeout(90)

SYMBOL = "BTC-USD"


def test_fence_refuses_a_lower_epoch_and_moves_up_with_a_higher_one() -> None:
    fence = EpochFence()
    assert fence.admit(0, 0) and fence.admit(1, 7)  # first word of each sender
    assert fence.admit(0, 3) and fence.high == {0: 3, 1: 7}  # a newer leader of shard 0
    assert not fence.admit(0, 2) and not fence.admit(0, 0)  # the deposed one, or epoch 0
    assert fence.admit(0, 3) and fence.admit(1, 7)  # the current leaders go on
    assert not fence.admit(1, 6) and fence.high == {0: 3, 1: 7}  # senders judged apart
    assert fence.admit(1, 9) and not fence.admit(1, 7)  # the refused epoch's successor
    # logged once per (sender, epoch), counted by the node per message
    assert fence.first_refusal(1, 7) and not fence.first_refusal(1, 7)
    assert fence.first_refusal(1, 6) and fence.first_refusal(0, 2)


def test_link_payloads_carry_the_epoch_and_read_the_older_two_tuple_as_epoch_zero() -> None:
    assert decode_link(encode_link(2, [(1, 0)], 5)) == (2, ((1, 0),), 5)  # (lists: tuples)
    # at epoch 0 the message is the older layout byte for byte: versions mix without replicas
    assert encode_link(2, 9) == packb((2, 9)) and decode_link(encode_link(2, 9)) == (2, 9, 0)
    for bad in (packb((1,)), packb((1, 2, 3, 4)), packb(5)):
        with pytest.raises((ValueError, TypeError)):
            decode_link(bad)


# (the frozen leader's role) → its link socket, the kind it sends late; the receiver's link
# counters, what they count applied, the socket it reads the link from
SIDES = {
    "shard": (lambda n: n.alink, LINK_SETTLE, lambda n: n.counts, "settlements",
              lambda n: n.engines[0]),
    "accounts": (lambda n: n.engines[0], LINK_FWD, lambda n: n.link_counts, "forwards",
                 lambda n: n.alink),
}  # fmt: skip


def _late_messages(role: str) -> Any:
    """The body: ``role``'s leader sends a trade's link messages late (held in the air),
    is frozen; its standby takes over and the trade settles; then the late ones land at the
    other tier's leader and the old leader is thawed."""
    socket_of, kind, counts_of, _, inbox_of = SIDES[role]

    async def body(cluster: InProcCluster) -> dict[str, Any]:
        await cluster.until(lambda: len(cluster.leaders()) == 2, what="two leaders")
        old = next(r for r in cluster.leaders() if r.role == role)
        peer = next(r for r in cluster.leaders() if r.role != role)
        standby = next(r for r in cluster.replicas if r.role == role and r is not old)
        await cluster.until(lambda: len(old.leader.replica.isr) == 2, what="standby in sync")
        async with cluster.client(timeout=1.0, retry=Retry(10.0)) as c:
            assert (await c.deposit("alice", "USD", "1000", ref="d1")).ok
            assert (await c.deposit("bob", "BTC", "2", ref="d2")).ok
            await cluster.until(lambda: 0 in _accounts(cluster).leader.linked, what="link up")
            hub = cluster.net.hub  # type: ignore[attr-defined]
            # sent before its pause, read after it, as a pause between its deadline check and
            # its send makes them
            sock = socket_of(old.leader)
            hold = hub.shaper = Hold(lambda sender, _: sender is sock, held=True)
            assert (await c.place(SYMBOL, "sell", "1", "100", account="bob", id="s1")).ok
            assert (await c.place(SYMBOL, "buy", "1", "100", account="alice", id="b1")).ok
            held = await cluster.until(lambda: _held(hub, kind, 2 if role == "accounts" else 1),
                                       what="the late messages sent")  # fmt: skip
            cluster.freeze(old)  # paused: no renewals, so the standby takes the lease
            await cluster.until(lambda: standby.leader is not None, what="the standby to lead")

            async def settled() -> bool:
                return (await c.balance("bob")).get("USD", (D(0), D(0)))[0] > D(99)  # (fees)

            await cluster.until(settled, what="the trade settled under the new leader")
            settled_with = (await c.balance("alice"), await c.balance("bob"))
            counts = counts_of(peer.leader)
            before = dict(counts)
            hold.held = False
            landed = hub.release(0.0)  # the old leader's late messages reach the other tier
            inbox = inbox_of(peer.leader)
            await cluster.until(lambda: not inbox.inbox, what="the late messages read")
            after = dict(counts)
            cluster.thaw(old)
            await cluster.until(lambda: old.exited is not None, what="the old leader to exit")
            return {"settled": settled_with, "held": held, "landed": landed, "before": before,
                    "after": after, "epochs": (old.lease.epoch, standby.lease.epoch),
                    "fence": dict(peer.leader.tier_link.fence.high),
                    "alice": await c.balance("alice"), "bob": await c.balance("bob"),
                    "audit": audit_report(await c.audit())}  # fmt: skip

    return body


def _accounts(cluster: InProcCluster) -> Any:
    """The account shard's leading replica."""
    return next(r for r in cluster.leaders() if r.role == "accounts")


def _held(hub: Any, kind: bytes, n: int) -> list[list[bytes]]:
    """The messages of ``kind`` in the air, once there are ``n`` of them (else [])."""
    held = [m for p in hub.airborne for air in (p.air_a, p.air_b) for _, m in air
            if m[0] == kind]  # fmt: skip
    return held if len(held) >= n else []


@pytest.mark.parametrize("role", ["shard", "accounts"])
def test_a_deposed_leaders_late_link_messages_are_refused(tmp_path: Path, role: str) -> None:
    """``shard``: the engine shard's old leader's settlements reach the account shard after
    its successor settled the trade; ``accounts``: the account shard's old leader's forwards
    reach the engine shard after its successor re-sent them. Failed on main (checked): the
    late messages were read as the link's duplicates, nothing refused or counted
    (``stale_epoch`` did not exist); a receiver could not tell a deposed leader's message
    from its successor's."""
    p = plan(1, 1, redis="redis://sim/0", replicas=2, data_dir=str(tmp_path))
    out = run_virtual(p, _late_messages(role))
    old_epoch, new_epoch = out["epochs"]
    assert new_epoch > old_epoch
    assert out["held"] and out["landed"] >= len(out["held"])
    assert [decode_link(m[-1])[2] for m in out["held"]] == [old_epoch] * len(out["held"])
    before, after = out["before"], out["after"]
    assert after.get("stale_epoch", 0) - before.get("stale_epoch", 0) == out["landed"]
    assert after["duplicates"] == before["duplicates"], "a late message was read"
    applied = SIDES[role][3]
    assert after[applied] == before[applied]
    assert out["fence"] == {0: new_epoch}
    assert (out["alice"], out["bob"]) == out["settled"]  # nothing moved by the late ones
    # one trade of 1 BTC at 100, the fees of the default markets (taker 5, maker 2 bps)
    assert out["alice"]["USD"][0] == D("899.95") and out["alice"]["BTC"][0] == D(1)
    assert out["bob"]["USD"][0] == D("99.98") and out["bob"]["BTC"][0] == D(1)
    lines, ok = out["audit"]
    assert ok, lines

"""An account shard's journaled routing (``shardex.accounts.routing``) and the mover's
``OP_PLACE`` on an account shard (``shardex.node.account_routing``), without sockets: a newer
map re-routes forwards, an older, equal or foreign one changes nothing, snapshots carry the
map, and bad requests are refused with a stable code before anything is journaled; an engine
shard's check of forwards against its own journaled map."""

from __future__ import annotations

from shardex.accounts.codes import A_NEW, A_PLACE, AE_FORWARD
from shardex.accounts.machines import AccountMachine, AccountMachineFactory, SettledEngineFactory
from shardex.accounts.routing import due, place_command
from shardex.auth import KeyInfo
from shardex.engine import DEFAULT_MARKETS
from shardex.engine.codes import BUY, GTC, LIMIT, OP_NEW
from shardex.node.account_routing import place_write
from shardex.node.account_service import AccountHandler
from shardex.node.nulljournal import NullJournal
from shardex.placement import default_owner
from shardex.placement.core import initial
from shardex.wire.codes import INVALID, MALFORMED, NOT_ALLOWED
from shardex.wire.layouts import AE_KIND, FWD_ESHARD
from shardex.wire.protocol import OP_FORWARD, OP_PLACE, decode_reply, encode_request

P = "BTC-USD"
HOME = default_owner(P, 2)
BASE = initial(2)
MOVED = BASE.with_pin(P, 1 - HOME).with_pin("ETH-USD", 0)  # (version 2)


def _factory() -> AccountMachineFactory:
    return AccountMachineFactory(0, 1, BASE.owner, engines=2)


def _forwarded_to(m: AccountMachine, oid: str) -> int:
    """Deposit, then place a buy of ``P``: the engine shard its forward went to."""
    out: list[tuple] = []
    m.apply((1, "al", "USD", 10**12, f"d-{oid}"), out)  # A_DEPOSIT
    m.apply((A_NEW, P, oid, "al", BUY, LIMIT, 10_000, 1, GTC, False, 0, None), out)
    (fwd,) = [ev for ev in out if ev[AE_KIND] == AE_FORWARD]
    return fwd[FWD_ESHARD]


def test_a_newer_map_re_routes_and_older_or_equal_ones_change_nothing() -> None:
    m = _factory().new(DEFAULT_MARKETS)
    assert m.placement is None and _forwarded_to(m, "a") == HOME
    seq = m.seq
    out: list[tuple] = []
    m.apply(place_command(MOVED), out)
    assert (out, m.seq, m.placement.version) == ([], seq, 2)  # no event, no seq
    assert _forwarded_to(m, "b") == 1 - HOME
    for stale in (BASE, MOVED):
        m.apply(place_command(stale), out)  # older, the same
    m.apply((A_PLACE, {"version": "x"}), out)  # malformed: ignored, never raises
    m.apply((A_PLACE, None), out)
    assert (out, m.placement.version, _forwarded_to(m, "c")) == ([], 2, 1 - HOME)
    assert m.engines == 2
    # a newer map over more engine shards (shardex reshard grew the engine tier; the node
    # takes one only with links to them: ``test_a_map_over_more_engine_shards...``): its
    # count is the machine's from then on, journaled like any map, so a replay routes the same
    grown = MOVED.with_shards(3).with_pin(P, 2)
    m.apply(place_command(grown), out)
    assert (out, m.engines, _forwarded_to(m, "e")) == ([], 3, 2)


def test_snapshots_carry_the_map_and_the_start_map_is_due_only_when_newer() -> None:
    m = _factory().new(DEFAULT_MARKETS)
    assert due(m, BASE) is BASE  # nothing journaled yet: the start map goes first
    assert "placement" not in m.snapshot()  # (none journaled: as before this existed)
    m.apply(place_command(MOVED), [])
    back = _factory().restore(m.snapshot(), DEFAULT_MARKETS)
    assert back.placement == MOVED and _forwarded_to(back, "d") == 1 - HOME
    assert due(back, BASE) is None and due(back, MOVED) is None
    newer = MOVED.with_pin("SOL-USD", 1)
    assert due(back, newer) is newer


def _handler(role: str | None = None) -> AccountHandler:
    h = AccountHandler(_factory().new(DEFAULT_MARKETS), NullJournal())
    if role is not None:
        h.key = KeyInfo("k" * 40, "someone", role, frozenset(("al",)))
    return h


def test_the_movers_place_is_journaled_once_and_bad_ones_are_refused() -> None:
    h = _handler()
    out: list[tuple] = []
    assert place_write_of(h, (OP_PLACE, MOVED.to_wire()), out) == {"placement": 2}
    commands = h.commands
    assert place_write_of(h, (OP_PLACE, MOVED.to_wire()), out) == {"placement": 2}  # a re-run
    assert place_write_of(h, (OP_PLACE, BASE.to_wire()), out) == {"placement": 2}  # older
    assert h.commands == commands  # (nothing journaled again)
    refusals = [
        (h, (OP_PLACE,), MALFORMED),
        (h, (OP_PLACE, {"version": -1, "shards": 2}), MALFORMED),
        (h, (OP_PLACE, initial(3).to_wire()), INVALID),
    ]
    for handler, cmd, code in refusals:
        res = place_write_of(handler, cmd, out)
        assert res["error"][0] == code, (cmd, res)
    trader = _handler("trader")  # (a secure cluster's key, as admission leaves it)
    assert place_write(trader, (OP_PLACE, MOVED.to_wire()), out)["error"][0] == NOT_ALLOWED
    assert trader.machine.placement is None
    assert out == []  # (an account shard's place emits no event)


def test_a_map_over_more_engine_shards_waits_for_links_to_them() -> None:
    """The node opens one forward link per engine shard at start: a live map over more engine
    shards than it has links to is refused before anything is journaled (the restart that a
    grow makes links them, and takes it); one over as many as it links to is journaled."""
    grown = MOVED.with_shards(3).with_pin(P, 2)
    h = _handler()
    h.engine_links = 2  # (what ``AccountNode`` sets: its links, made at start)
    out: list[tuple] = []
    assert place_write_of(h, (OP_PLACE, grown.to_wire()), out)["error"][0] == INVALID
    assert h.machine.placement is None and h.commands == 0
    h.engine_links = 3  # (restarted with links to three)
    assert place_write_of(h, (OP_PLACE, grown.to_wire()), out) == {"placement": grown.version}
    back = _factory().restore(h.machine.snapshot(), DEFAULT_MARKETS)  # (configured: 2)
    assert (back.engines, back.placement) == (3, grown)


def place_write_of(h: AccountHandler, cmd: tuple, out: list[tuple]) -> dict:
    """``cmd`` through the handler's request path, as the router delivers it."""
    error, results = decode_reply(h.handle(encode_request([cmd]), out))
    assert error is None, error
    (res,) = results
    return res


def test_an_engine_shard_checks_forwards_against_its_journaled_map() -> None:
    """``(OP_PLACE, map)`` in a ``SettledEngine``'s journal: forwards of a pair the newer map
    gives another shard are refused from then on (before it, accepted); snapshots carry it."""
    factory = SettledEngineFactory(HOME, 1, 2, BASE.owner)
    se = factory.new(DEFAULT_MARKETS)

    def forward(seq: int, oid: str) -> None:
        new = (OP_NEW, P, oid, "al", BUY, LIMIT, 10_000, 1, GTC, False, 0)
        se.apply((OP_FORWARD, 0, seq, seq - 1, new), [])

    forward(1, "a")
    assert se.refusals == 0
    se.apply((OP_PLACE, BASE.to_wire()), [])  # (the map it started with: the same routing)
    seq = se.seq
    se.apply((OP_PLACE, MOVED.to_wire()), [])
    se.apply((OP_PLACE, BASE.to_wire()), [])  # older: ignored
    assert (se.seq, se.placement.version) == (seq, 2)  # no event, no seq
    forward(2, "b")
    assert se.refusals == 1
    back = factory.restore(se.snapshot(), DEFAULT_MARKETS)
    assert back.placement == MOVED

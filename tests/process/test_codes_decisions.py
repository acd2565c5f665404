"""Retry, fate and failover decisions read the code, never the text.

Every error text is rewritten to nonsense at the point an error is made (``ErrorText``'s
constructor: a node's error as the client decodes it, and the client's own timeout,
unreachable and malformed-reply errors), and the decisions of the SDK (``Retry``, fates,
topology refresh, ``Result.code``), of loadgen's fate tracker and of the bridge (follow the
leader of a ``not_leader`` epoch) stay the same. With a real cluster (a retrying client gets
its order through a shard's kill -9 and restart exactly once): tests/chaos/test_codes_restart.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from shardex.cli import market as cli_market
from shardex.client import (
    NOT_EXECUTED,
    UNKNOWN,
    Client,
    ClientCore,
    RequestTimeout,
    Result,
    ShardexError,
    retryable,
    stale_topology,
    uncertain,
)
from shardex.engine.codes import OP_CANCEL, OP_NEW
from shardex.node import router as router_node
from shardex.tools.fates import why_unknown
from shardex.wire import codes
from shardex.wire.errors import ErrorText, unsent
from shardex.wire.protocol import (
    ERR_MALFORMED_MESSAGE,
    ERR_OVERLOADED,
    ERR_UNAVAILABLE,
    ERR_UNKNOWN_KEY,
    VERSION,
    decode_reply,
    decode_request,
    encode_reply,
    halted_error,
    internal_error,
    internal_op_refusal,
    journal_error,
    leader_changed_error,
    not_leader_epoch,
    not_leader_error,
    packb,
    recovering_error,
    too_many_reads_error,
)
from tests.support.scramble import NONSENSE
from tests.support.standin import StandIn

SYMBOL = "BTC-USD"
NEW = (OP_NEW, SYMBOL, "o-1", "acct1", 0, 0, 100, 1, 0, False, 0)


def _wire(err: ErrorText) -> ErrorText:
    """As the client sees a node's error: encoded by the node, decoded on arrival."""
    got, results = decode_reply(encode_reply(None, err))
    assert results is None and got is not None
    return got


def _replies() -> dict[str, Callable[[], Any]]:
    """Every kind of error a process answers with, and the client's own ones."""
    core = ClientCore("tcp://127.0.0.1:1", key=False)
    out: list[Any] = [None]
    return {
        "overloaded": lambda: _wire(ERR_OVERLOADED),
        "unavailable": lambda: _wire(ERR_UNAVAILABLE),
        "not_leader": lambda: _wire(not_leader_error(4, "shard-0.r1 is a standby")),
        "not_leader_routed": lambda: _wire(not_leader_error(4, "fenced", routed=True)),
        "leader_changed": lambda: _wire(leader_changed_error(0.3, 0, 5)),
        "journal": lambda: _wire(journal_error("No space left on device")),
        "internal": lambda: _wire(internal_error(ValueError("x"))),
        "recovering": lambda: _wire(recovering_error("shard 0", {"done": 1}, "replaying")),
        "halted": lambda: _wire(halted_error("integrity")),
        "too_many_reads": lambda: _wire(too_many_reads_error(300, 2, 256)),
        "malformed_request": lambda: _wire(decode_request(b"\xc1")[1]),
        "internal_op": lambda: _wire(internal_op_refusal([(40, 0, 1, 0, ())])),
        "unknown_key": lambda: _wire(ERR_UNKNOWN_KEY),
        "malformed_message": lambda: _wire(ERR_MALFORMED_MESSAGE),
        # the router's replies, encoded once when it was imported
        "router_unavailable": lambda: decode_reply(router_node._UNAVAILABLE)[0],
        "router_overloaded": lambda: decode_reply(router_node._OVERLOADED)[0],
        "router_bad_key": lambda: decode_reply(router_node._BAD_KEY)[0],
        "router_too_large": lambda: decode_reply(router_node._TOO_LARGE)[0],
        # the client's own
        "garbage_reply": lambda: decode_reply(b"junk")[0],
        "timeout": lambda: core.no_reply("no reply", codes.TIMEOUT).error,
        "unreachable": lambda: core.no_reply("could not send", codes.UNREACHABLE).error,
        "result_count": lambda: (core.store([0], None, (), out), out[0][0])[1],
    }


def _decisions(err: Any) -> tuple:
    """Everything the SDK, loadgen and the bridge decide from one error."""
    tuples = [NEW, (OP_CANCEL, SYMBOL, "o-2", "acct1")]
    ask, send = ClientCore.retry_plan(tuples, [(err, []), (err, [])], {}, [1, 1])
    core = ClientCore("tcp://127.0.0.1:1", key=False)
    return (
        uncertain(err), retryable(err), stale_topology(err), unsent(err),
        not_leader_epoch(err),  # the bridge follows the leader when this is not None
        Result({}, [], err, NOT_EXECUTED).code,
        ask, send, ClientCore.fate_targets(tuples, [(err, []), (None, [])]),
        core.results([{}], [(err, [])])[0].fate,
        core.fate_of(NEW, err, None)[0], why_unknown(core.fate_of(NEW, err, None)[1]),
        ClientCore.topology_stale([(err, [])], {}, [0]),
    )  # fmt: skip


def test_decisions_do_not_change_when_every_text_is_rewritten(scramble: list[str]) -> None:
    makers = _replies()
    rewritten: dict[str, tuple] = {}
    for name, make in makers.items():
        err = make()
        assert type(err) is ErrorText and err.startswith(NONSENSE), (name, err)
        rewritten[name] = _decisions(err)
    assert len(scramble) >= len(makers)
    with pytest.MonkeyPatch.context() as mp:  # the same errors with their real texts
        mp.setattr(ErrorText, "__new__", staticmethod(_PLAIN_NEW))
        for name, make in makers.items():
            err = make()
            assert not err.startswith(NONSENSE), (name, err)
            assert _decisions(err) == rewritten[name], name


_PLAIN_NEW = ErrorText.__new__


def test_the_decisions_are_the_specified_ones() -> None:
    """Spelled out for the kinds that matter (so the comparison above is not between two
    equally wrong answers)."""
    d = {name: _decisions(make()) for name, make in _replies().items()}
    fate = 9  # index of the result's fate in ``_decisions``
    for name in ("timeout", "leader_changed", "garbage_reply", "result_count"):
        assert d[name][:4] == (True, True, False, False) and d[name][fate] == UNKNOWN, name
        assert d[name][6:8] == ([0, 1], []), name  # Retry asks their fates first
    for name in ("not_leader", "not_leader_routed"):
        assert d[name][:5] == (False, True, True, False, 4) and d[name][5] == "not_leader"
        assert d[name][fate] == NOT_EXECUTED and d[name][-1] is True
    assert d["unreachable"][:4] == (False, True, True, True)
    assert d["unreachable"][6:8] == ([], [0, 1])  # never left: sent again at once
    for name in ("unavailable", "router_unavailable", "recovering"):
        assert d[name][:4] == (False, True, False, False) and d[name][fate] == NOT_EXECUTED
    final_or_transient = ("overloaded", "router_overloaded", "journal", "halted", "internal_op",
                          "unknown_key", "too_many_reads", "router_bad_key", "malformed_request")
    for name in final_or_transient:
        assert d[name][:4] == (False, False, False, False), name
        assert d[name][6:8] == ([], []) and d[name][fate] == NOT_EXECUTED, name
    assert d["internal"][0] and d["internal"][fate] == UNKNOWN  # some of it may have run
    assert d["overloaded"][5] == "overloaded" and d["timeout"][5] == "timeout"
    why = 11
    assert (d["timeout"][why], d["overloaded"][why], d["not_leader"][why]) == (
        "timeout", "overloaded", "not_leader")  # fmt: skip
    assert (d["unavailable"][why], d["journal"][why], d["unreachable"][why]) == (
        "shard_unavailable", "journal_unavailable", "cannot_reach")  # fmt: skip
    assert d["garbage_reply"][why] == "malformed_reply" and d["halted"][why] == "other_error"


def test_a_text_that_reads_like_another_error_does_not_fool_anyone() -> None:
    """The old texts, under another code (or none): the code decides."""
    liar = _wire(ErrorText(codes.OVERLOADED, "timeout after 1s; not leader (epoch 9); cannot "
                           "reach; shard unavailable; malformed reply"))  # fmt: skip
    assert _decisions(liar) == _decisions(_wire(ERR_OVERLOADED))
    for text in ("timeout after 1s", "not leader (epoch 9): x", "cannot reach tcp://h:1"):
        assert not uncertain(text) and not retryable(text) and not stale_topology(text)
        assert not_leader_epoch(text) is None


def test_exceptions_carry_the_code_of_the_error_behind_them() -> None:
    """``ShardexError.code``: a read answered with a batch error keeps its code (data too, even
    a newer peer's unknown code, whose data has a ``code`` of its own)."""
    for err, name in ((_wire(ERR_OVERLOADED), "overloaded"),
                      (_wire(not_leader_error(3, "standby")), "not_leader"),
                      (decode_reply(packb((VERSION, (999, "new", {}), None)))[0],
                       "malformed_reply")):  # fmt: skip
        with pytest.raises(ShardexError) as info:
            ClientCore.read_result(err, None, "status")
        assert info.value.code == name and info.value.error.data == err.data
    with pytest.raises(ShardexError) as info:
        ClientCore.read_result(None, (1, 2), "status")
    assert info.value.code == "malformed_reply"
    core = ClientCore("tcp://127.0.0.1:1", key=False)
    assert core.no_reply("x").code == "timeout" and isinstance(core.no_reply("x"), RequestTimeout)
    assert core.no_reply("x", codes.UNREACHABLE).code == "unreachable"
    assert ShardexError("plain").code is None


def test_status_labels_a_recovering_shard_by_its_code(scramble: list[str]) -> None:
    """``shardex status`` shows RECOVER for a shard whose status read was answered with a
    ``recovering`` error, whatever its text, and DOWN for any other error (even one whose text
    reads "recovering: ..."): the client's status entry carries the code, the CLI reads it."""
    answers = iter([recovering_error("shard 0", {}, "replaying its journal"), ERR_UNAVAILABLE])
    with StandIn(lambda key, cmds: encode_reply(None, next(answers))) as si, Client(
        si.endpoint, timeout=2.0, account="a", shard_endpoints=None
    ) as c:
        c.shards = 1
        c.markets_source = "given"
        (recovering,) = c.status()
        (unavailable,) = c.status()
    assert NONSENSE in recovering["error"] and recovering["code"] == "recovering"
    assert cli_market._down(recovering) == "RECOVER"
    assert unavailable["code"] == "unavailable" and cli_market._down(unavailable) == "DOWN"
    lookalike = {"shard": 0, "error": "recovering: shard 0 is replaying", "code": "unavailable"}
    assert cli_market._down(lookalike) == "DOWN"

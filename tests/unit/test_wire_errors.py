"""Errors cross the wire as ``(code, text, data)`` and decode in one place (pure, no sockets)."""

from __future__ import annotations

import pickle

import msgpack
import pytest

from shardex.wire import codes
from shardex.wire.errors import ErrorText, clean_data, error
from shardex.wire.protocol import (
    ERR_OVERLOADED,
    ERR_UNAVAILABLE,
    VERSION,
    decode_reply,
    decode_request,
    encode_reply,
    internal_op_refusal,
    leader_changed_error,
    not_leader_epoch,
    not_leader_error,
    packb,
)


def test_an_error_round_trips_with_its_code_text_and_data() -> None:
    for err in (
        ERR_OVERLOADED,
        ERR_UNAVAILABLE,
        not_leader_error(7, "shard-0.r1 is a standby of shard 0"),
        not_leader_error(7, "x", routed=True),
        leader_changed_error(1.25, 2, 9),
        error(codes.RECOVERING, "recovering: shard 0 is replaying", slot="shard 0",
              estimate={"done": 5, "total": 10}),  # fmt: skip
    ):
        got, results = decode_reply(encode_reply(None, err))
        assert results is None and type(got) is ErrorText
        assert (got.code, str(got), got.data) == (err.code, str(err), err.data)
    raw = msgpack.unpackb(encode_reply(None, not_leader_error(3, "fenced")))
    assert raw == [VERSION, [codes.NOT_LEADER, "not leader (epoch 3): fenced",
                             {"epoch": 3, "routed": False}], None]  # fmt: skip


def test_not_leader_carries_its_epoch_in_data_not_only_in_the_text() -> None:
    err = error(codes.NOT_LEADER, "whatever the wording", epoch=12)
    assert not_leader_epoch(decode_reply(encode_reply(None, err))[0]) == 12
    # the old text without the code is not a not_leader (nothing parses it any more)
    assert not_leader_epoch("not leader (epoch 12): fenced") is None
    assert not_leader_epoch(error(codes.UNAVAILABLE, "not leader (epoch 12)")) is None
    assert not_leader_epoch(None) is None


def test_a_plain_string_error_is_refused_at_the_sender() -> None:
    with pytest.raises(TypeError):
        encode_reply(None, "overloaded")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "slot",
    ["overloaded", (999, "from a newer peer", {}), (1, 2, 3), ("x", "y", {}), 5, [1], b"x",
     (codes.OVERLOADED, "overloaded")],
)  # fmt: skip
def test_an_error_slot_it_cannot_read_is_a_malformed_reply(slot: object) -> None:
    got, results = decode_reply(packb((VERSION, slot, None)))
    assert results is None and got.code == codes.MALFORMED_REPLY and got.startswith("malformed")


def test_garbage_replies_and_other_versions_are_malformed_replies() -> None:
    for payload in (b"junk", packb((VERSION + 1, None, ())), packb((True, None, ())),
                    packb((VERSION, None, 5)), packb([VERSION])):  # fmt: skip
        got, results = decode_reply(payload)
        assert results is None and got.code == codes.MALFORMED_REPLY, payload


def test_request_rejects_carry_codes() -> None:
    assert decode_request(b"\xc1")[1].code == codes.MALFORMED_REQUEST
    assert decode_request(packb((VERSION + 1, ())))[1].code == codes.UNSUPPORTED_VERSION
    assert decode_request(packb((VERSION, 3)))[1].code == codes.MALFORMED_REQUEST
    assert decode_request(b"\x90" * (2 << 20))[1].code == codes.FRAME_TOO_LARGE
    refusal = internal_op_refusal([(20, {})])
    assert refusal.code == codes.INTERNAL_OP and refusal.data == {"op": 20}


def test_data_is_bounded_and_plain() -> None:
    huge = {f"k{i}": "x" * 10_000 for i in range(100)}
    got = clean_data({"a": huge, "b": [1 << 70, 2.5, None, object()], 3: "dropped", "d": True})
    assert set(got) == {"a", "b", "d"} and len(got["a"]) == 16
    assert all(len(v) <= 200 for v in got["a"].values())
    assert got["b"] == [None, 2.5, None, None] and got["d"] is True
    deep = clean_data({"a": {"b": {"c": {"d": 1}}}})
    assert deep == {"a": {"b": {"c": None}}}
    err = ErrorText(codes.HALTED, "x" * 500, {"why": "y" * 500})
    assert err.cut(10) == "x" * 10 and err.cut(10).code == codes.HALTED
    assert len(err.data["why"]) == 200


def test_an_error_survives_pickling_with_its_code() -> None:
    err = leader_changed_error(0.5, 1, 4)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ErrorText and back == err and back.code == err.code
    assert back.data == err.data and back.name == "leader_changed"

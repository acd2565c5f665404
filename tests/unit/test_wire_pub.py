"""The PUB stream's one decoder (``shardex.wire.pub``) and the one version check every wire
decoder shares (``shardex.wire.envelope.version_error``)."""

from __future__ import annotations

import msgpack
import pytest

from shardex.config import load_markets
from shardex.engine.codes import EV_ACCEPTED
from shardex.wire import protocol, pub
from shardex.wire.envelope import VERSION, version_error
from shardex.wire.pub import Malformed, decode_envelope, decode_events_epoch, decode_pub_epoch

MARKETS = load_markets()
EV = (EV_ACCEPTED, 1, "BTC-USD", "o1")


@pytest.mark.parametrize(
    "version", [VERSION + 1, 0, -1, True, "1" * 500, None, 1 << 63, 2.0, b"\x01"]
)
def test_every_decoder_refuses_another_version_with_the_same_reason(version):
    reason = version_error(version)
    assert reason is not None and reason.startswith("unsupported protocol version ")
    assert len(reason) < 80  # a peer's huge value is never echoed whole
    assert protocol.decode_request(msgpack.packb([version, []]))[1] == reason
    assert protocol.decode_reply(msgpack.packb([version, None, []]))[0] == version_error(
        version, " in reply"
    )
    events = msgpack.packb([version, 0, [list(EV)]])
    for decode in (decode_events_epoch, lambda p: decode_pub_epoch(p, 1, MARKETS)):
        with pytest.raises(Malformed, match="unsupported protocol version"):
            decode(events)


def test_the_version_spoken_passes_everywhere():
    assert version_error(VERSION) is None
    assert protocol.decode_request(protocol.encode_request([]))[1] is None
    assert protocol.decode_reply(protocol.encode_reply([]))[0] is None
    assert decode_pub_epoch(pub.encode_events(0, [EV], 4), 1, MARKETS) == (0, [EV], 0, 4)


def test_protocol_names_are_the_pub_decoder_not_a_twin():
    """Tests and tools that import the events codec from ``protocol`` get ``wire.pub``'s."""
    assert protocol.decode_events_epoch is pub.decode_events_epoch
    assert protocol.decode_events is pub.decode_events
    assert protocol.encode_events is pub.encode_events


@pytest.mark.parametrize(
    "msg, why",
    [
        ((VERSION, 2, ()), "is not one of 0..1"),
        ((VERSION, "0", ()), "is not one of 0..1"),
        ((VERSION, 0, (), 0), "epoch"),
        ((VERSION, 0, (), True), "epoch"),
        ((VERSION, 0), "expected"),
        ((VERSION, 0, (), 1, 2, 3), "expected"),
        ((VERSION, 0, (), None, -1), "ts"),
        ((VERSION, 0, (), None, "5"), "ts"),
        ((VERSION, 0, (), 1, True), "ts"),
    ],
)
def test_envelope_rejects_what_the_protocol_does_not_say(msg, why):
    with pytest.raises(Malformed, match=why):
        decode_envelope(msgpack.packb(msg), 2)


def test_trusted_readers_accept_any_shard_index_but_not_garbage():
    assert decode_events_epoch(pub.encode_events(7, [EV])) == (7, (EV,), None)
    with pytest.raises(Malformed, match="not msgpack"):
        decode_events_epoch(b"\xc1")
    with pytest.raises(Malformed, match="is not an int"):
        decode_events_epoch(msgpack.packb((VERSION, None, ())))

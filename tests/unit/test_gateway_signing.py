"""Signed REST requests (``shardex.gateway.signing``): the signature is HMAC-SHA256 over
timestamp + METHOD + path + body (checked here with the stdlib, not the module's helper);
tampering, a stale timestamp, a replay and a missing or unknown key are refused with their codes."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from shardex.gateway.signing import (
    KEY_HEADER,
    SIG_HEADER,
    TS_HEADER,
    ApiKey,
    SignatureError,
    Verifier,
    sign,
)
from shardex.wire.codes import REPLAYED, STALE_REQUEST, UNAUTHORIZED

KEY = ApiKey("k1", b"s3cret", "trader", frozenset({"alice"}))
NOW = 1_796_600_000_000
BODY = b'{"symbol":"BTC-USD","side":"buy","qty":"1","price":"5"}'


def _headers(ts: int = NOW, sig: str | None = None, body: bytes = BODY) -> dict[str, str]:
    want = hmac.new(b"s3cret", f"{ts}POST/v1/order".encode() + body, hashlib.sha256).hexdigest()
    return {KEY_HEADER: "k1", TS_HEADER: str(ts), SIG_HEADER: sig or want}


def test_a_correctly_signed_request_is_its_keys_and_the_key_acts_only_for_its_accounts():
    v = Verifier({"k1": KEY})
    assert v.check(_headers(), "POST", "/v1/order", BODY, NOW + 4000) is KEY
    assert sign(b"s3cret", str(NOW), "post", "/v1/order", BODY) == _headers()[SIG_HEADER]
    assert KEY.may_act_for("alice") and not KEY.may_act_for("bob")


@pytest.mark.parametrize(
    "headers, method, path, body, now, code",
    [
        (_headers(), "POST", "/v1/order", BODY + b" ", NOW, UNAUTHORIZED),  # body tampered
        (_headers(), "POST", "/v1/orders", BODY, NOW, UNAUTHORIZED),  # another path
        (_headers(), "DELETE", "/v1/order", BODY, NOW, UNAUTHORIZED),  # another method
        (_headers(sig="00" * 32), "POST", "/v1/order", BODY, NOW, UNAUTHORIZED),
        ({**_headers(), KEY_HEADER: "k2"}, "POST", "/v1/order", BODY, NOW, UNAUTHORIZED),
        ({**_headers(), TS_HEADER: "-5"}, "POST", "/v1/order", BODY, NOW, UNAUTHORIZED),
        ({TS_HEADER: str(NOW)}, "POST", "/v1/order", BODY, NOW, UNAUTHORIZED),
        (_headers(), "POST", "/v1/order", BODY, NOW + 5001, STALE_REQUEST),
        (_headers(), "POST", "/v1/order", BODY, NOW - 5001, STALE_REQUEST),
    ],  # fmt: skip
)
def test_tampered_stale_and_unsigned_requests_are_refused(headers, method, path, body, now, code):
    with pytest.raises(SignatureError) as info:
        Verifier({"k1": KEY}).check(headers, method, path, body, now)
    assert info.value.code == code


def test_a_replay_within_the_window_is_refused_and_a_new_timestamp_is_a_new_request():
    v = Verifier({"k1": KEY})
    v.check(_headers(), "POST", "/v1/order", BODY, NOW)
    with pytest.raises(SignatureError) as info:
        v.check(_headers(), "POST", "/v1/order", BODY, NOW + 1000)
    assert info.value.code == REPLAYED
    assert v.check(_headers(NOW + 1), "POST", "/v1/order", BODY, NOW + 1000) is KEY
    with pytest.raises(SignatureError) as info:  # after the window: stale, not replayed
        v.check(_headers(), "POST", "/v1/order", BODY, NOW + 6000)
    assert info.value.code == STALE_REQUEST
    assert not v.seen  # both signatures' memory went with their windows

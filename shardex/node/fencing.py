"""What a process that does not lead its shard answers: a standby (``not_leader_reply``) and a
replicated leader past its lease deadline (``fence``), engine or account shard alike. Nothing
runs; the client may send the request again, to the leader."""

from __future__ import annotations

from typing import Any

from shardex.node.replication import log
from shardex.wire.errors import ErrorText
from shardex.wire.protocol import (
    BATCH,
    BATCH_REQUEST_WIDTH,
    NOT_LEADER,
    decode_batch,
    decode_request,
    encode_batch,
    encode_reply,
    not_leader_error,
)
from shardex.wire.transport import send_frames


def not_leader_reply(payload: bytes, error: ErrorText) -> bytes:
    """The reply of a process that does not lead its shard (a standby): ``error`` (a
    ``not_leader_error``) for every well-formed request, reads too (see
    ``Standby.serve_clients``); a malformed one gets its own reason."""
    _, bad = decode_request(payload)
    return encode_reply(None, bad if bad is not None else error)


def answer_not_leader(zmq: Any, sock: Any, via_router: bool, routed: bytes,
                      direct: bytes) -> int:  # fmt: skip
    """Answer every request waiting on ``sock`` with ``not_leader`` (a fenced leader: nothing
    runs, the client may send it again): a router link's batch with ``routed`` per request, a
    direct client's request with ``direct``. Bounded per call; returns the requests refused."""
    refused = 0
    for _ in range(1000):
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            break
        if via_router:
            items = None
            if len(frames) == 2 and frames[0] == BATCH:
                items = decode_batch(frames[1], BATCH_REQUEST_WIDTH)
            if not items:
                continue
            out: list[bytes] = []
            for i in range(0, len(items), BATCH_REQUEST_WIDTH):
                out += (items[i], items[i + 1], routed)
            refused += len(out) // 3
            reply = [b"", BATCH, encode_batch(out)]
        elif len(frames) == 4:  # [client, routing key, request id, payload]
            refused += 1
            client, _, req, _ = frames
            reply = [client, req, direct]
        else:
            continue
        try:
            send_frames(sock, reply)
        except zmq.ZMQError:
            pass  # full or gone: that client times out and asks the order's fate
    return refused


def fence(zmq: Any, rep: Any, what: str, sockets: list[tuple[Any, bool]],
          links: list[Any], hello_msg: bytes, fenced: bool) -> int:  # fmt: skip
    """A replicated leader past its lease deadline (fenced, or Redis unreachable), engine or
    account shard: every request waiting on ``sockets`` ((socket, via a router)) is answered
    ``not_leader`` with our epoch (nothing runs; what was admitted before the deadline stays
    held), and, the first time (``fenced`` False), each router link is told that this link
    stopped leading, so routers answer ``shard unavailable`` at once until a leader registers
    (they re-point on that leader's hello, or on ours if the lease comes back). Returns the
    requests refused."""
    why = f"{rep.node} led {what} at epoch {rep.epoch}: lease not confirmed"
    routed = encode_reply(None, not_leader_error(rep.epoch, why, routed=True))
    direct = encode_reply(None, not_leader_error(rep.epoch, why))
    refused = sum(answer_not_leader(zmq, sock, via, routed, direct) for sock, via in sockets)
    if not fenced:
        log.error("ALERT %s is past its lease deadline (epoch %d): refusing requests as not "
                  "leader", rep.node, rep.epoch)  # fmt: skip
        for link in links:
            try:
                send_frames(link.sock, [b"", NOT_LEADER, hello_msg])
            except zmq.ZMQError:
                pass
    return refused


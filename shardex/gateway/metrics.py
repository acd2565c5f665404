"""The gateway's Prometheus metrics (served on its own HTTP port at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shardex.metrics import LATENCY_BUCKETS

CONNECTIONS = Gauge("shardex_gateway_connections", "Open WebSocket connections")
CONNECTS = Counter("shardex_gateway_connects_total", "WebSocket connections accepted")
SUBSCRIPTIONS = Gauge("shardex_gateway_subscriptions", "Live subscriptions", ["channel"])
FRAMES = Counter("shardex_gateway_frames_total", "Frames queued to clients", ["channel"])
BYTES = Counter("shardex_gateway_bytes_total", "Bytes of the frames queued to clients",
                ["channel"])  # fmt: skip
QUEUE_DEPTH = Gauge("shardex_gateway_queue_depth",
                    "Frames queued to clients, all connections (at the last sample)")  # fmt: skip
QUEUE_MAX = Gauge("shardex_gateway_queue_depth_max",
                  "The fullest client queue, in frames (at the last sample)")  # fmt: skip
RESYNCS = Counter("shardex_gateway_resyncs_total",
                  "resync_required sent (why=slow) or resyncs a client asked for (why=client)",
                  ["channel", "why"])  # fmt: skip
SLOW_CLOSES = Counter("shardex_gateway_slow_closes_total",
                      "Connections closed because they kept falling behind")  # fmt: skip
ERRORS = Counter("shardex_gateway_errors_total", "JSON errors answered, by code name", ["name"])
BOOK_READS = Counter("shardex_gateway_book_reads_total", "Book reads (OP_BOOK) of the engine")
HTTP = Counter("shardex_gateway_http_requests_total", "HTTP requests", ["route", "status"])
UP = Gauge("shardex_gateway_redis_up", "1 when the last Redis read succeeded")
HTTP_SECONDS = Histogram("shardex_gateway_http_seconds", "HTTP request handling time, by route",
                         ["route"], buckets=LATENCY_BUCKETS)  # fmt: skip
USER_DROPPED = Gauge("shardex_gateway_user_dropped",
                     "User-channel entries given up on (an engine event whose order's owner was "
                     "never read within the hold time, or the hold was full)")  # fmt: skip
USER_COD = Counter("shardex_gateway_cancel_on_disconnect_total",
                   "Cancel-alls run because a key's last cancel-on-disconnect connection closed")
DROPPED = Counter("shardex_gateway_frames_dropped_total",
                  "Frames queued to a client and dropped unsent because it fell behind (frames "
                  "out = frames_total - this)")  # fmt: skip
BINANCE_CONNECTIONS = Gauge("shardex_gateway_binance_connections",
                            "Open Binance-compatible WebSocket connections (/ws, /stream)")
SESSIONS = Gauge("shardex_gateway_sessions", "Live browser sessions of the web page")
SESSIONS_ENDED = Counter("shardex_gateway_session_ends_total",
                         "User-channel WebSockets stopped because their browser session ended")
WRITES = Counter("shardex_gateway_writes_total",
                 "Connections written in a write round (one socket write each, at most)")
WRITE_ROUNDS = Counter("shardex_gateway_write_rounds_total",
                       "Write rounds: every connection kicked within the window written once")
# the hops of a trade's way to the clients, finer than LATENCY_BUCKETS where the 100 ms
# target is (the bench decomposes its commit → frame latency with them)
HOP_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
               0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)  # fmt: skip
TRADE_READ = Histogram("shardex_gateway_trade_read_seconds",
                       "A step's oldest trade: its exchange time to the gateway's Redis read "
                       "that brought it (the bridge's hop and the read's), one per pair per step",
                       buckets=HOP_BUCKETS)  # fmt: skip
TRADE_WRITTEN = Histogram("shardex_gateway_trade_written_seconds",
                          "A step's oldest trade: its exchange time to its write round's end "
                          "(every subscriber written), one sample per pair per step",
                          buckets=HOP_BUCKETS)  # fmt: skip
STEP_WRITTEN = Histogram("shardex_gateway_read_written_seconds",
                         "The gateway's own hop: a step's Redis read to the end of the write "
                         "round that wrote its trades to every subscriber, one per pair per step",
                         buckets=HOP_BUCKETS)  # fmt: skip
OPS_SCRAPES = Counter("shardex_gateway_ops_scrapes_total",
                      "The operator page's reads of the cluster's exporters, by outcome",
                      ["outcome"])  # fmt: skip

CHANNELS = ("book", "trades", "ticker", "user", "heartbeat", "binance")


def init_labels() -> None:
    """Every known label set at 0 from the start, so a dashboard's rate() of a gateway that
    has had no client yet is 0, not "no data" (Prometheus's advice: initialise metrics)."""
    for ch in CHANNELS:
        FRAMES.labels(ch)
        BYTES.labels(ch)
        for why in ("slow", "client"):
            RESYNCS.labels(ch, why)
    for ch in ("book", "trades", "ticker", "user"):
        SUBSCRIPTIONS.labels(ch)
    for outcome in ("ok", "failed"):
        OPS_SCRAPES.labels(outcome)


init_labels()

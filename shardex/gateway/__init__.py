"""The gateway (``shardex gateway``): HTTP + WebSocket market data for people and bots.

Pure cores (``book``: a symbol's L2 feed and its checksum; ``outbox``: the per-client queue
policy; ``messages``: parsing what clients send) and the thin process around them
(``hub``: Redis Streams and the engine's book reads → frames; ``server``: aiohttp on uvloop).
docs/gateway.md describes the protocol.
"""

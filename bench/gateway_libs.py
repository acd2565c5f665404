"""Which WebSocket server library the gateway uses: one pre-encoded frame to N clients.

For each candidate (``websockets`` with its ``broadcast``, ``websockets`` with one ``send``
per client, ``aiohttp`` with one ``send_str`` per client), all on uvloop, in the same run:
a server process accepts ``--clients`` connections from a client process (the websockets
client, in another process so its CPU is not counted), then sends ``--rounds`` rounds of the
same pre-encoded text frame to every client. Reported: frames delivered per second (from the
first send to the last frame received by the client process) and the server's CPU seconds per
1,000 frames (``time.process_time`` of the server process over the same span).

    python bench/gateway_libs.py --clients 1000 --rounds 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import socket
import time
from typing import Any

import uvloop

FRAME = json.dumps(
    {"channel": "book", "symbol": "BTC-USD", "seq": 123456, "prev_seq": 123455,
     "bids": [["50000.12", "0.5"]], "asks": [["50001.00", "1.25"]], "checksum": 3735928559}
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve_websockets(port: int, n: int, rounds: int, mode: str, out: Any, go: Any) -> None:
    from websockets.asyncio.server import broadcast, serve

    conns: set[Any] = set()
    ready = asyncio.Event()

    async def handler(ws: Any) -> None:
        conns.add(ws)
        if len(conns) == n:
            ready.set()
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", port, max_queue=None, compression=None):
        await ready.wait()
        go.set()
        c0 = time.process_time()
        for _ in range(rounds):
            if mode == "broadcast":
                broadcast(conns, FRAME)
            else:
                for ws in list(conns):
                    await ws.send(FRAME)
            await asyncio.sleep(0)
        await asyncio.to_thread(out.recv)  # the client process got every frame
        out.send(time.process_time() - c0)


async def serve_aiohttp(port: int, n: int, rounds: int, mode: str, out: Any, go: Any) -> None:
    from aiohttp import WSMsgType, web

    conns: list[Any] = []
    ready = asyncio.Event()

    async def handler(request: Any) -> Any:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        conns.append(ws)
        if len(conns) == n:
            ready.set()
        async for msg in ws:
            if msg.type == WSMsgType.CLOSE:
                break
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
    await ready.wait()
    go.set()
    c0 = time.process_time()
    for _ in range(rounds):
        for ws in conns:
            await ws.send_str(FRAME)
        await asyncio.sleep(0)
    await asyncio.to_thread(out.recv)
    out.send(time.process_time() - c0)
    await runner.cleanup()


def server_main(lib: str, port: int, n: int, rounds: int, mode: str, out: Any, go: Any) -> None:
    run = serve_websockets if lib == "websockets" else serve_aiohttp
    uvloop.run(run(port, n, rounds, mode, out, go))


async def clients(port: int, n: int, rounds: int, go: Any) -> float:
    """Connect ``n`` clients, wait for every frame; seconds from go to the last frame."""
    from websockets.asyncio.client import connect

    got = 0
    done = asyncio.Event()
    conns = []
    for _ in range(n):
        conns.append(await connect(f"ws://127.0.0.1:{port}/", max_queue=None, compression=None,
                                   open_timeout=60))  # fmt: skip
    await asyncio.to_thread(go.wait)
    t0 = time.perf_counter()

    async def read(ws: Any) -> None:
        nonlocal got
        for _ in range(rounds):
            await ws.recv()
            got += 1
        if got == n * rounds:
            done.set()

    tasks = [asyncio.create_task(read(ws)) for ws in conns]
    await done.wait()
    wall = time.perf_counter() - t0
    await asyncio.gather(*tasks)
    for ws in conns:
        await ws.close()
    return wall


def one(lib: str, mode: str, n: int, rounds: int) -> dict[str, Any]:
    port = free_port()
    mine, theirs = mp.Pipe()
    go = mp.Event()
    server = mp.Process(target=server_main, args=(lib, port, n, rounds, mode, theirs, go))
    server.start()
    try:
        deadline = time.monotonic() + 60
        while True:  # until the server listens (importing aiohttp takes a while on a busy box)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        wall = uvloop.run(clients(port, n, rounds, go))
        mine.send("done")
        cpu = mine.recv()
        server.join(30)
    finally:
        if server.is_alive():  # (a failed run leaves no server behind)
            server.terminate()
            server.join(5)
    frames = n * rounds
    return {"library": f"{lib} ({mode})", "clients": n, "frames": frames,
            "frames_per_s": round(frames / wall), "server_cpu_ms_per_1k": round(
                1000 * cpu / (frames / 1000), 2)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=50)
    args = ap.parse_args()
    rows = [one("websockets", "broadcast", args.clients, args.rounds),
            one("websockets", "send", args.clients, args.rounds),
            one("aiohttp", "send_str", args.clients, args.rounds)]  # fmt: skip
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()

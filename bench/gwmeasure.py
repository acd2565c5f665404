"""What ``bench/gateway.py`` reads of the processes and the gateway besides the clients' own
report: CPU (user and kernel) and run-queue waits from ``/proc``, the box's busy share, the
gateway's write counters and hop histograms, and commit → frame cut into its hops
(docs/gateway.md#measured)."""

from __future__ import annotations

import os
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram


def proc_cpu(pids: list[int], kernel: bool = False) -> float:
    """User + system CPU seconds of ``pids`` so far, together (``kernel``: system only, the
    syscalls: the gateway's socket writes and reads)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[12]) + (0 if kernel else int(fields[11]))
    return total / os.sysconf("SC_CLK_TCK")


def run_delay(pids: list[int]) -> float:
    """Seconds ``pids`` were runnable but waited for a core, so far, together (the
    scheduler's ``/proc/PID/schedstat``): on a shared box, the share of a process's latency
    that is the box's, not its own work."""
    return sum(int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) for pid in pids) / 1e9


def gateway_metrics(urls: list[str]) -> dict[str, float]:
    """The gateways' write counters and trade-written histogram buckets, summed."""
    out: dict[str, float] = {}
    for url in urls:
        with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(("shardex_gateway_write", "shardex_gateway_trade_",
                                    "shardex_gateway_read_written")):  # fmt: skip
                    name, _, value = line.rpartition(" ")
                    out[name] = out.get(name, 0.0) + float(value)
    return out


HOPS = {"trade_read_ms": "trade_read", "read_written_ms": "read_written",
        "trade_written_ms": "trade_written"}  # the gateway's hop histograms (docs/gateway.md)


def written(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, Any]:
    """Write rounds and writes per second, and the hops the gateway measures, one sample per
    pair per step (p50/p99 as the histogram bucket's upper bound, ms): a trade's exchange time
    → its Redis read (the bridge's hop, then the read), read → written to every subscriber
    (the gateway's own), exchange time → written (both)."""
    delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
    out: dict[str, Any] = {
        "rounds_per_s": round(delta.get("shardex_gateway_write_rounds_total", 0) / wall),
        "writes_per_s": round(delta.get("shardex_gateway_writes_total", 0) / wall)}
    for name, hist in HOPS.items():
        buckets = sorted((float(re.search(r'le="([^"]+)"', k)[1]), v) for k, v in delta.items()
                         if k.startswith(f"shardex_gateway_{hist}_seconds_bucket"))  # fmt: skip
        total = buckets[-1][1] if buckets else 0

        def pct(q: float, buckets: list[tuple[float, float]] = buckets,
                total: float = total) -> float | None:  # fmt: skip
            hit = next((le for le, n in buckets if n >= q * total), None) if total else None
            return None if hit is None else round(hit * 1000, 1)

        out[name] = {"p50": pct(0.5), "p99": pct(0.99), "samples": total}
    return out


def box_busy() -> tuple[float, float]:
    """(busy CPU seconds of the whole box, all cores, so far; wall seconds) from /proc/stat:
    what every process used, ours and the other work on the box."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + f[4]  # idle + iowait
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK"), time.monotonic()


def proc_rss(pids: list[int]) -> int:
    """Resident set size of ``pids`` in bytes, together."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def hops(hist: HdrHistogram, load: dict[str, Any]) -> dict[str, Any]:
    """commit → frame cut into its hops, p50 and p99 of each (ms): commit → Redis (the bridge,
    read by the bench's own reader), exchange time → the gateway's read, the gateway's read →
    written to every subscriber, and written → read by the client (commit → frame minus
    exchange time → written, percentile by percentile: an estimate, the two are different
    samples)."""
    gw = load.get("gateway_writes") or {}
    frame = {q: hist.get_value_at_percentile(p) / 1000 for q, p in (("p50", 50), ("p99", 99))}
    done = gw.get("trade_written_ms") or {}
    client = {q: None if done.get(q) is None else round(max(0.0, frame[q] - done[q]), 1)
              for q in frame}  # fmt: skip
    pick = ("p50", "p99")
    return {"commit_redis": {q: (load.get("redis_ms") or {}).get(q) for q in pick},
            "commit_gateway_read": {q: (gw.get("trade_read_ms") or {}).get(q) for q in pick},
            "gateway_read_written": {q: (gw.get("read_written_ms") or {}).get(q) for q in pick},
            "commit_written": {q: done.get(q) for q in pick},
            "written_client_read": client, "commit_frame": frame}  # fmt: skip


def print_hops(rep: dict[str, Any]) -> None:
    """The decomposition table: each hop's p50 / p99 and the CPU of every process."""
    print("\nWhere commit → frame went (p50 / p99 ms; the gateway's hops are histogram bucket "
          "bounds) and who used the CPU (% of one core over the run):\n")
    print("| clients | commit → Redis | commit → gateway read | read → written | commit → "
          "written | written → client (diff.) | commit → frame | load avg | CPU by process "
          "| box busy (% of 200) | gateway: in the kernel / waiting for a core |")
    print("| ---: | --- | --- | --- | --- | --- | --- | --- | --- | ---: | --- |")
    for f in rep["fleets"]:
        h = f["hops_ms"]
        cols = " | ".join(f"{h[k]['p50']} / {h[k]['p99']}" for k in (
            "commit_redis", "commit_gateway_read", "gateway_read_written", "commit_written",
            "written_client_read", "commit_frame"))  # fmt: skip
        cpu = ", ".join(f"{k} {v}" for k, v in f["cluster_cpu_pct"].items())
        cpu += ", clients " + " + ".join(map(str, f["client_cpu_pct"]))
        print(f"| {f['clients']:,} | {cols} | {f['loadavg'][0]:g} → {f['loadavg'][1]:g} | {cpu} | "
              f"{f['box_busy_pct']} | {round(100 * f['gateway_sys_share'])} % / "
              f"{f['gateway_wait_pct']} % |")

"""What ``bench/overload.py`` reads of a running cluster besides its replies: the router's
forward→reply histogram and rejects (its /metrics), and each process's CPU and RSS (/proc),
so that a level's numbers say where the wait was and what each process spent. Linux only."""

from __future__ import annotations

import os
import re
import threading
import urllib.request
from pathlib import Path
from typing import Any

MB = 1 << 20


def router_view(port: int) -> dict[str, float]:
    """The router's counters that say where the wait is: its forward→reply histogram (summed
    over slots, cumulative bucket counts by upper bound) and its rejects by reason."""
    out: dict[str, float] = {}
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return out
    for line in text.decode().splitlines():
        m = re.match(r'shardex_router_(?:account_)?ack_seconds_bucket\{.*le="([^"]+)".*\} (\S+)',
                     line)  # fmt: skip
        if m:
            key = f"le {m.group(1)}"
            out[key] = out.get(key, 0) + float(m.group(2))
            continue
        m = re.match(r'shardex_router_rejected_total\{reason="([^"]+)"\} (\S+)', line)
        if m:
            out[f"rejected {m.group(1)}"] = float(m.group(2))
        elif line.startswith(("shardex_router_service_rate{", "shardex_router_inflight{")):
            name, value = line.rsplit(" ", 1)
            out[f"gauge {name[15:]}"] = float(value)
        elif line.startswith("shardex_router_shed_by_wait_total "):
            out["rejected of which by wait"] = float(line.split()[1])
    return out


def router_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """One level's share of ``router_view``: the router's p50/p99 (bucket upper bounds, ms)
    and its rejects by reason."""
    les = sorted((float(k[3:]), after[k] - before.get(k, 0)) for k in after if k[:3] == "le ")
    total = les[-1][1] if les else 0

    def pct(q: float) -> float | None:
        for le, n in les:
            if total and n >= q * total:
                return round(le * 1000, 2)
        return None

    rejected = {k[9:]: int(after[k] - before.get(k, 0)) for k in after if k[:9] == "rejected "}
    gauges = {k[6:]: round(v) for k, v in after.items() if k[:6] == "gauge "}
    return {"router_p50_ms": pct(0.5), "router_p99_ms": pct(0.99),
            "router_rejected": {k: v for k, v in rejected.items() if v},
            "router_at_end": gauges}  # fmt: skip


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far (/proc/PID/stat), None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


class RssSampler:
    """Samples the RSS of given pids every ``every`` s in a thread: first, last and peak."""

    def __init__(self, pids: dict[str, int], every: float = 0.5) -> None:
        self.pids = pids
        self.every = every
        self.first = {n: rss(p) for n, p in pids.items()}
        self.cpu0 = {n: cpu_s(p) for n, p in pids.items()}
        self.last = dict(self.first)
        self.peak = dict(self.first)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def sample(self) -> None:
        for name, pid in self.pids.items():
            v = rss(pid)
            self.last[name] = v
            if v is not None and (self.peak[name] is None or v > self.peak[name]):
                self.peak[name] = v

    def stop(self) -> dict[str, dict[str, float | None]]:
        self._stop.set()
        self._thread.join()
        self.sample()
        out = {}
        for name, pid in self.pids.items():
            f, last, peak = self.first[name], self.last[name], self.peak[name]
            c0, c1 = self.cpu0[name], cpu_s(pid)
            out[name] = {
                "start_mb": None if f is None else round(f / MB, 1),
                "growth_mb": None if f is None or last is None else round((last - f) / MB, 1),
                "peak_growth_mb": None if f is None or peak is None else round((peak - f) / MB, 1),
                "gone": last is None,  # the process died during the level
                "cpu_s": None if c0 is None or c1 is None else round(c1 - c0, 2),
            }
        return out

"""The latency percentile curve of a run, HDR style, as a standalone SVG (pure: a histogram in,
text out; ``shardex loadgen --plot FILE`` writes it).

x is the percentile on a log scale of ``1 / (1 - p)`` (50, 90, 99, 99.9, 99.99 equally spaced,
as HdrHistogram's plotter draws it: the tail gets as much room as the median); y is the latency
in milliseconds, linear from 0. Plain SVG written by hand rather than a plotting library: nothing
new to install (matplotlib alone is tens of MB and not on every box), the file opens in any
browser, and the test reads the drawn points back from it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 800, 450
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 50  # margins: the plot area is inside them
STEP = 0.05  # decades of 1 / (1 - p) between two points of the curve
MARKS = (50.0, 90.0, 99.0, 99.9, 99.99, 99.999)  # labelled on the x axis (as far as the data go)
SHOWN = (50.0, 90.0, 99.0, 99.9, 99.99)  # their values written in the legend


@dataclass(frozen=True)
class Point:
    """One point of the curve: ``percentile`` (0..100) and the latency at it (µs)."""

    percentile: float
    us: int


def decades(percentile: float) -> float:
    """Where ``percentile`` sits on the x axis: log10(1 / (1 - p)) (50 → 0.30, 99 → 2)."""
    return -math.log10(1.0 - percentile / 100.0)


def curve(hist: Any) -> list[Point]:
    """Points of ``hist`` (an ``HdrHistogram``) every ``STEP`` decade from p0 to the last
    percentile its count resolves (1 - 1/count), then the max at that end."""
    count = hist.get_total_count()
    if count == 0:
        return []
    end = math.log10(count) if count > 1 else 0.0
    out = []
    for i in range(math.ceil(end / STEP - 1e-9)):  # (counted, not summed: no float drift)
        p = 100.0 * (1.0 - 10.0 ** (-i * STEP))
        out.append(Point(p, int(hist.get_value_at_percentile(p))))
    out.append(Point(100.0 * (1.0 - 10.0 ** -end), int(hist.get_max_value())))
    return out


def _nice(top: float) -> float:
    """A round axis maximum at or above ``top`` (1, 2, 2.5 or 5 times a power of ten)."""
    if top <= 0:
        return 1.0
    base = 10.0 ** math.floor(math.log10(top))
    return next(m * base for m in (1, 2, 2.5, 5, 10) if m * base >= top)


class Frame:
    """The mapping of (decades, ms) to SVG coordinates for one plot."""

    def __init__(self, x_max: float, y_max_ms: float) -> None:
        self.x_max, self.y_max = max(x_max, 1.0), _nice(y_max_ms)

    def x(self, dec: float) -> float:
        return LEFT + dec / self.x_max * (WIDTH - LEFT - RIGHT)

    def y(self, ms: float) -> float:
        return HEIGHT - BOTTOM - ms / self.y_max * (HEIGHT - TOP - BOTTOM)


def _axes(f: Frame) -> list[str]:
    """The grid lines and tick labels of both axes."""
    out, y0 = [], HEIGHT - BOTTOM
    for p in MARKS:
        d = decades(p)
        if d > f.x_max + 1e-9:
            break
        x = f"{f.x(d):.1f}"
        out.append(f'<line class="grid" x1="{x}" y1="{TOP}" x2="{x}" y2="{y0}"/>')
        out.append(f'<text x="{x}" y="{y0 + 18}" text-anchor="middle">{p:g}%</text>')
    for i in range(6):
        ms = f.y_max * i / 5
        y = f"{f.y(ms):.1f}"
        out.append(f'<line class="grid" x1="{LEFT}" y1="{y}" x2="{WIDTH - RIGHT}" y2="{y}"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y}" text-anchor="end" '
                   f'dominant-baseline="middle">{ms:g}</text>')  # fmt: skip
    out.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 10}" '
               'text-anchor="middle">percentile</text>')  # fmt: skip
    out.append(f'<text x="16" y="{(TOP + y0) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 16 {(TOP + y0) / 2})">latency (ms)</text>')  # fmt: skip
    return out


def svg(points: Sequence[Point], title: str = "latency by percentile",
        legend: Sequence[tuple[str, int]] = ()) -> str:  # fmt: skip
    """The SVG document of the curve through ``points`` (``curve``); ``legend``: (label, µs)
    pairs written in the corner (``summary``). No points: the axes and a note."""
    last = points[-1] if points else Point(99.0, 1000)
    f = Frame(decades(min(last.percentile, 99.9999)), max((p.us for p in points), default=1) / 1000)
    line = " ".join(f"{f.x(decades(p.percentile)):.2f},{f.y(p.us / 1000):.2f}" for p in points)
    body = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        "<style>.grid{stroke:#ddd;stroke-width:1}.curve{fill:none;stroke:#1f6feb;"
        "stroke-width:2}text{fill:#333}</style>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
        f'<text x="{LEFT}" y="24" font-size="15">{escape(title)}</text>',
        *_axes(f),
        f'<polyline class="curve" points="{line}"/>' if points else
        f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no samples</text>',
    ]  # fmt: skip
    for i, (label, us) in enumerate(legend):
        body.append(f'<text x="{WIDTH - RIGHT - 150}" y="{TOP + 16 + 16 * i}">'
                    f"{escape(label)}: {us / 1000:.3f} ms</text>")  # fmt: skip
    body.append("</svg>")
    return "\n".join(body) + "\n"


def summary(hist: Any) -> list[tuple[str, int]]:
    """The legend: p50 .. p99.99 as far as the count resolves them, and the max (µs)."""
    n = hist.get_total_count()
    if n == 0:
        return []
    out = [(f"p{p:g}", int(hist.get_value_at_percentile(p))) for p in SHOWN
           if decades(p) <= math.log10(max(n, 2)) + 1e-9]  # fmt: skip
    return [*out, ("max", int(hist.get_max_value()))]


def plot(hist: Any, title: str) -> str:
    """The whole picture of one run's histogram."""
    return svg(curve(hist), title, summary(hist))

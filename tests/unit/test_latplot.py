"""``shardex loadgen --plot``'s picture (``shardex.tools.latplot``) from fixed histograms: the
SVG's drawn points, read back through the plot's own axes, lie on the known curve (1..10,000 µs
once each: the latency at percentile p is p/10 ms), the x axis is the HDR log scale, and an
empty or one-sample run still makes a valid picture."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from hdrh.histogram import HdrHistogram

from shardex.tools.latplot import HEIGHT, LEFT, WIDTH, Frame, curve, decades, plot

NS = "{http://www.w3.org/2000/svg}"


def _hist(values: range) -> HdrHistogram:
    h = HdrHistogram(1, 60_000_000, 3)
    for v in values:
        h.record_value(v)
    return h


def test_the_svg_draws_the_percentile_curve_on_the_hdr_log_scale() -> None:
    h = _hist(range(1, 10_001))
    doc = ET.fromstring(plot(h, "fixed & known"))  # (well-formed XML, the title escaped)
    assert doc.get("width") == str(WIDTH) and doc.get("height") == str(HEIGHT)
    texts = [t.text or "" for t in doc.iter(f"{NS}text")]
    assert "fixed & known" in texts
    assert [t for t in texts if t.endswith("%")] == ["50%", "90%", "99%", "99.9%", "99.99%"]
    assert "p99: 9.903 ms" in texts and "max: 10.007 ms" in texts  # (HDR: 3 digits kept)
    line = next(doc.iter(f"{NS}polyline")).get("points") or ""
    drawn = [tuple(map(float, xy.split(","))) for xy in line.split()]
    pts = curve(h)
    assert len(drawn) == len(pts) == 81  # p0 .. p99.99 every 0.05 decade, then the max
    frame = Frame(4.0, 10.007)
    for (x, y), p in zip(drawn, pts, strict=True):
        # read the point back through the axes: percentile from x, latency from y
        dec = (x - LEFT) / (frame.x(1.0) - LEFT)
        ms = (frame.y(0) - y) / (frame.y(0) - frame.y(1.0))
        pct = 100 * (1 - 10**-dec)
        assert abs(dec - decades(p.percentile)) < 0.01
        assert abs(ms - pct / 10) <= 0.01 + pct / 10 * 0.002, (pct, ms)
    assert drawn[-1][0] == frame.x(4.0) and drawn[-1][1] < drawn[-2][1]  # the max, rightmost


def test_an_empty_or_tiny_run_still_makes_a_picture() -> None:
    empty = ET.fromstring(plot(_hist(range(0)), "nothing"))
    assert "no samples" in [t.text for t in empty.iter(f"{NS}text")]
    one = ET.fromstring(plot(_hist(range(250, 251)), "one"))
    line = next(one.iter(f"{NS}polyline")).get("points") or ""
    assert len(line.split()) == 1 and re.fullmatch(r"[\d.]+,[\d.]+", line)

"""What a load run reports: ``Progress`` once a second, the ``Report`` of a run (merged over
its generator processes) and the lines ``shardex loadgen`` prints for both."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from shardex.tools.fates import FATES
from shardex.wire import codes


class Progress(NamedTuple):
    """What the progress callback gets once a second (sums over generator processes)."""

    elapsed: float
    sent: int
    acked: int
    errors: int  # batch errors + timeouts
    p99: int  # µs
    timeouts: int
    executed: int  # fates of timeouts asked so far
    not_executed: int
    unknown: int
    fates_open: int = 0  # still being asked (after the load: the fate phase)


def open_outcomes(error_codes: Mapping[str, int]) -> int:
    """How many of the counted errors (by code name) left their command's fate open."""
    return sum(n for name, n in error_codes.items()
               if name in codes.BY_NAME and codes.BY_NAME[name].uncertain)  # fmt: skip


@dataclass
class Report:
    sent: int = 0
    acked: int = 0  # commands that got their reply (any outcome)
    accepted: int = 0
    held: int = 0  # risk on: ok replies of the account tier ("held and forwarded", no events)
    trades: int = 0
    fills: int = 0  # order sides of this run filled (a trade between two of its orders: 2)
    cancelled: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # rejects by class (code name)
    # where accepted/trades/fills/cancelled/engine rejects were counted: "replies" (risk off:
    # the engine shard's reply holds them) or "events" (risk on: the engine shards' PUB,
    # ``shardex.tools.fills``); events_lost: events the subscriber missed (counts are short)
    counted_from: str = "replies"
    events_repaired: int = 0  # events the subscriber missed, fetched again by seq range
    events_lost: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # batch errors / timeouts, by text
    error_codes: dict[str, int] = field(default_factory=dict)  # the same, by code name
    # fates of the commands whose outcome was open (timeouts, the router's "may have run",
    # unreadable replies), asked until known or ``fate_wait`` after the load; unknown_why:
    # the unknown ones by the reason of their last question (``shardex.tools.fates.WHY_*``)
    fates: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FATES, 0))
    unknown_why: dict[str, int] = field(default_factory=dict)
    fate_questions: int = 0  # fate queries sent (retries included)
    fate_seconds: float = 0.0  # spent asking fates after the load (not in ``seconds``)
    abandoned: int = 0  # in flight when interrupted: neither answered nor timed out
    interrupted: bool = False
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    hist: Any = None

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def timeouts(self) -> int:
        """Commands whose outcome was open (a timeout, the router's "may have run", an
        unreadable reply): their fates were asked."""
        return open_outcomes(self.error_codes)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "hist"}
        d["timeouts"] = self.timeouts
        d["acked_per_s"] = round(self.acked / self.seconds) if self.seconds else 0
        d["trades_per_s"] = round(self.trades / self.seconds) if self.seconds else 0
        h = self.hist
        d["latency_us"] = (
            {
                "p50": h.get_value_at_percentile(50),
                "p90": h.get_value_at_percentile(90),
                "p99": h.get_value_at_percentile(99),
                "p99.9": h.get_value_at_percentile(99.9),
                "p99.99": h.get_value_at_percentile(99.99),
                "max": h.get_max_value(),
            }
            if h is not None and h.get_total_count()
            else {}
        )
        return d


def format_progress(p: Progress) -> str:
    """The one-line progress shown while a run goes (timeouts and their fates included)."""
    fates = f" (executed {p.executed:,}, not {p.not_executed:,}, unknown {p.unknown:,}"
    fates += f", asking {p.fates_open:,})" if p.fates_open else ")"
    return (
        f"{p.elapsed:6.1f}s  sent {p.sent:>10,}  acked {p.acked:>10,} "
        f"({p.acked / max(p.elapsed, 1e-9):>9,.0f}/s)  p99 {p.p99:>8,} µs  "
        f"errors {p.errors:,}  timeouts {p.timeouts:,}" + (fates if p.timeouts else "") + "   "
    )


def format_report(report: Mapping[str, Any]) -> list[str]:
    """A report (``Report.to_dict()``) as the lines ``shardex loadgen`` prints."""
    lines = [
        f"sent {report['sent']:,}  acked {report['acked']:,} in "
        f"{report['seconds']:.2f}s = {report['acked_per_s']:,} orders/s",
        f"accepted {report['accepted']:,}  trades {report['trades']:,} "
        f"({report.get('trades_per_s', 0):,}/s)  fills {report.get('fills', 0):,}  "
        f"cancelled {report['cancelled']:,}  timeouts {report['timeouts']:,}",
    ]
    if report.get("config", {}).get("risk") == "on":
        lost = report.get("events_lost", 0)
        lines.append(
            f"  risk on ({report['config'].get('account_shards')} account shard(s), "
            f"{report['config'].get('funded', 0)} funding deposits): held and forwarded "
            f"{report.get('held', 0):,} (the ok replies); accepted, trades, fills and cancels "
            "counted from the engine shards' events (PUB) of this run's orders"
            + (
                f" ({report['events_repaired']:,} missed live, fetched again by seq)"
                if report.get("events_repaired")
                else ""
            )
            + (f"; {lost:,} events missed: those counts are short" if lost else "")
        )
    f = report["fates"]
    if report["timeouts"] or any(f.values()):
        lines.append(
            f"  fates of open outcomes (asked, {report.get('fate_questions', 0):,} questions, "
            f"{report.get('fate_seconds', 0):.1f}s after the load): executed "
            f"{f['executed']:,}  not executed {f['not_executed']:,}  unknown {f['unknown']:,}"
        )
        why = report.get("unknown_why") or {}
        if why:
            lines.append("  unknown because: " + ", ".join(
                f"{k} {v:,}" for k, v in sorted(why.items(), key=lambda kv: -kv[1])))  # fmt: skip
    for reason, n in sorted(report["rejected"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  rejected {reason:<18} {n:>10,}")
    for reason, n in sorted(report["errors"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  error    {reason:<18} {n:>10,}")
    lat = report["latency_us"]
    if lat:
        lines.append("latency µs   " + "  ".join(f"{k} {v:,}" for k, v in lat.items()))
    return lines

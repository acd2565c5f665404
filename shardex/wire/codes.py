"""Every result code of shardex in one table: its number, public name, stage and meaning, and
what a caller may do about it (the only thing retry, fate and failover decisions look at).

A code travels as a number (journals, events, the ``(code, text, data)`` error of a reply) and
is shown by its name (JSON ``code``, metrics labels, reports). Numbers and names are a
contract: never renumber or rename, only add. The numbers say where a code can appear:

* ``0–99``: a command's own answer, the ``code`` of a ``rejected`` event (engine or account
  shard). ``not_leader`` (16) is the one exception: it predates this table and travels as a
  batch error only.
* ``100–199``: a batch-level error of a cluster process: the whole request was answered with it.
* ``200–299``: client-local: the SDK made it itself (nothing, or nothing readable, came back).

The band (a column, not a number range: the old codes predate it) says which stage answers:
``edge`` (decoding and shape), ``identity`` (keys), ``ledger`` (the account tier's funds),
``matching`` (the engine's market rules and book), ``node`` (the serving process: load,
journal, leadership), ``client`` (the SDK). The flags say what a caller may do:

* ``final``: it settles the command: nothing ran, and the same request gets the same answer.
* ``retryable``: the SDK's ``Retry`` may send it again (asking its fate first when uncertain).
* ``uncertain``: the fate is open (it may have run): ask the order's fate before deciding.
* ``refresh``: a direct client should ask a router for the topology again (wrong process).
* ``unsent``: it never left this client: send it again at once, there is no fate to ask.

A code none of them applies to (``overloaded``, ``journal_unavailable``...) is transient:
nothing ran, and whether and when to send it again is the caller's choice.

``python -m shardex.wire.codes --markdown`` prints the table as ``docs/wire.md`` shows it
(``--write PATH`` updates that page in place); a test keeps the page equal to this table.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

EDGE, IDENTITY, LEDGER, MATCHING, NODE, CLIENT = (
    "edge", "identity", "ledger", "matching", "node", "client")  # fmt: skip
BANDS = (EDGE, IDENTITY, LEDGER, MATCHING, NODE, CLIENT)
EVENT_MAX = 100  # codes below it are per-command answers (a ``rejected`` event's code)
BATCH_MAX = 200  # codes in [EVENT_MAX, BATCH_MAX) are batch errors of a cluster process


@dataclass(frozen=True)
class Code:
    """One row of the table (see the module docstring for the columns)."""

    number: int
    name: str
    band: str
    meaning: str
    final: bool = False
    retryable: bool = False
    uncertain: bool = False
    refresh: bool = False
    unsent: bool = False


TABLE: dict[int, Code] = {}  # number → row, in the order the rows are defined below
BY_NAME: dict[str, Code] = {}


def _code(number: int, name: str, band: str, meaning: str, **flags: bool) -> int:
    """Add a row; its number is the module constant. Refuses a reused number or name."""
    row = Code(number, name, band, meaning, **flags)
    if number in TABLE or name in BY_NAME or band not in BANDS:
        raise ValueError(f"code {number} {name!r}: number or name reused, or unknown band")
    TABLE[number] = BY_NAME[name] = row
    return number


_F = {"final": True}
# -- 0–99: a command's answer (the code of a ``rejected`` event) ------------------------------
MALFORMED = _code(0, "malformed", EDGE, "the command is not of the schema's shape (not an "
                  "object/array, bad JSON or UTF-8, a field missing, unknown, of the wrong type "
                  "or too long); also edge rejects recorded before codes existed", **_F)
INVALID = _code(1, "invalid", EDGE, "every field has the right type but a value or combination "
                "is not allowed (unknown side/type/tif/stp, a market order with a price, "
                "post_only with a market order...); also the name of an unknown code", **_F)
UNKNOWN_OP = _code(2, "unknown_op", EDGE, "the op is not new, cancel or amend", **_F)
UNKNOWN_SYMBOL = _code(3, "unknown_symbol", MATCHING, "no market of that symbol", **_F)
OUT_OF_RANGE = _code(4, "out_of_range", MATCHING,
                     "price or qty <= 0 or above the market's max", **_F)
OFF_GRID = _code(5, "off_grid", MATCHING,
                 "price or qty not a multiple of the market's tick or lot", **_F)
DUPLICATE_ID = _code(6, "duplicate_id", MATCHING, "a new order reuses the id of a live or "
                     "recently finished order of the account", **_F)
NOT_LIVE = _code(7, "not_live", MATCHING,
                 "cancel/amend of an order that is not live (never was, or finished)", **_F)
WRONG_ACCOUNT = _code(8, "wrong_account", MATCHING,
                      "cancel/amend of a live order of another account", **_F)
POST_ONLY_CROSS = _code(9, "post_only_cross", MATCHING,
                        "a post_only order (or amend) would cross the book", **_F)
AMEND_INCREASE = _code(10, "amend_increase", MATCHING,
                       "an amend asks for more than the open qty", **_F)
WRONG_SHARD = _code(11, "wrong_shard", NODE, "the symbol belongs to another shard under the "
                    "refusing shard's placement map (the sender's map is stale: nothing ran, "
                    "refresh it and send again), or a read of an account on another account "
                    "shard; data: shard (the owner it knows), version (its map's)",
                    retryable=True, refresh=True)
NOT_ALLOWED = _code(12, "not_allowed", IDENTITY,
                    "the client's key may not act for (or read) that account", **_F)
INSUFFICIENT_FUNDS = _code(13, "insufficient_funds", LEDGER,
                           "a hold or withdraw exceeds the available balance", **_F)
UNKNOWN_ASSET = _code(14, "unknown_asset", LEDGER, "a transfer in an asset no market trades",
                      **_F)
DUPLICATE_REF = _code(15, "duplicate_ref", LEDGER,
                      "a transfer ref already used by another transfer", **_F)
NOT_LEADER = _code(16, "not_leader", NODE, "the process does not lead its shard (a standby, or "
                   "a leader fenced by a newer epoch or past its lease deadline): nothing ran; "
                   "data: epoch (the refusing process's), routed", retryable=True, refresh=True)
MOVING = _code(17, "moving", NODE, "the pair is moving to another shard, or has moved there "
               "(its book was handed off): nothing ran; send it again (a router routes it to "
               "the pair's new shard once the move is done); data: shard (the new owner), "
               "when known", retryable=True, refresh=True)
WOULD_TRIGGER = _code(18, "would_trigger", MATCHING, "a stop or take-profit order whose "
                      "trigger the pair's last trade price has already reached (it would "
                      "trigger at once: place a plain order instead)", **_F)
UNTRIGGERED = _code(19, "untriggered", MATCHING, "an amend of a stop or take-profit order "
                    "that has not triggered yet (cancel it and place it again)", **_F)
EXPIRED = _code(20, "expired", MATCHING, "a good-till-date order whose expire time is not after "
                "the shard's exchange time: it would expire at once, so it is not accepted",
                **_F)
# markets at runtime (``shardex.engine.admin``): a pair's state and limits, an account's
MARKET_HALTED = _code(25, "market_halted", MATCHING, "the pair is halted: new orders, amends "
                      "and cancels are refused until an admin resumes it", **_F)
CANCEL_ONLY = _code(26, "cancel_only", MATCHING, "the pair is in cancel-only mode: only "
                    "cancels are accepted", **_F)
DELISTED = _code(27, "delisted", MATCHING, "the pair is delisted: it accepts nothing (its "
                 "orders were cancelled when it was)", **_F)
PRICE_BAND = _code(28, "price_band", MATCHING, "a limit price further from the pair's "
                   "reference price (its last trade) than its price band allows", **_F)
ORDER_TOO_LARGE = _code(29, "order_too_large", MATCHING, "the order's qty or notional is above "
                        "the pair's maximum order size", **_F)
ACCOUNT_RESTRICTED = _code(30, "account_restricted", IDENTITY, "the account is restricted by an "
                           "admin: no new orders, amends, withdrawals or margin moves out "
                           "(cancels still run)",
                           **_F)
UNIT_CONFLICT = _code(31, "unit_conflict", LEDGER, "a pair listed at runtime would need a finer "
                      "unit than an existing asset's (its lot, or tick × lot, is not a whole "
                      "number of that asset's units): nothing was listed", **_F)
ORDER_TOO_SMALL = _code(32, "order_too_small", MATCHING, "the order's qty is below the pair's "
                        "minimum order size", **_F)
# 40-49: perpetual-futures markets (``shardex.engine.perps``, docs/perps.md)
NOT_PERP = _code(40, "not_perp", MATCHING, "an index price for a pair that is not a perpetual "
                 "(kind perp) market", **_F)
INSUFFICIENT_MARGIN = _code(41, "insufficient_margin", MATCHING, "a perp order's initial "
                            "margin at the worst price it can fill (or a margin withdrawal) is "
                            "more than the account's equity on the pair covers", **_F)
REDUCE_ONLY_REJECTED = _code(42, "reduce_only_rejected", MATCHING, "a reduce-only order would "
                             "open or grow a position (none, or its side is the position's)",
                             **_F)
NO_MARK = _code(43, "no_mark", MATCHING, "a perp pair has no mark price yet (no index): an "
                "order that may open a position cannot be margined", **_F)
# -- 100–199: batch-level errors of a cluster process (nothing of the request ran, unless
# the row says uncertain) ------------------------------------------------------------------
MALFORMED_REQUEST = _code(100, "malformed_request", EDGE, "the request's frames or payload "
                          "cannot be decoded (not [version, commands], not msgpack)", **_F)
FRAME_TOO_LARGE = _code(101, "frame_too_large", EDGE,
                        "the request is larger than the frame limit; data: size, max", **_F)
UNSUPPORTED_VERSION = _code(102, "unsupported_version", EDGE, "the request speaks another "
                            "protocol version; data: version, speaks", **_F)
UNKNOWN_ROUTE = _code(103, "unknown_route", EDGE,
                      "the router cannot route the request's routing key", **_F)
INTERNAL_OP = _code(104, "internal_op", EDGE, "the request holds a command only the cluster "
                    "itself creates (edge reject, forward, hello); data: op", **_F)
TOO_MANY_READS = _code(105, "too_many_reads", EDGE, "more reads (or audits) in one request "
                       "than a shard serves; data: reads, audits, max", **_F)
UNKNOWN_KEY = _code(106, "unknown_key", IDENTITY,
                    "the connection's key is not (or no longer) in the key registry", **_F)
OVERLOADED = _code(110, "overloaded", NODE, "the router or shard shed the request (a queue was "
                   "full): send it later")
UNAVAILABLE = _code(111, "unavailable", NODE, "the router has no live shard (leader) for the "
                    "request: send it again when one registers", retryable=True)
RECOVERING = _code(112, "recovering", NODE, "the shard is replaying its journal after a "
                   "restart; data: slot, estimate (the replay's progress)", retryable=True)
LEADER_CHANGED = _code(113, "leader_changed", NODE, "the request was in flight to a leader that "
                       "a newer epoch deposed: it may have run; data: shard, epoch, age",
                       retryable=True, uncertain=True)
JOURNAL_UNAVAILABLE = _code(114, "journal_unavailable", NODE, "the shard cannot write its "
                            "journal (disk full, I/O error): no write runs; data: why")
HALTED = _code(115, "halted", NODE, "the account shard halted new orders and amends (an "
               "integrity alarm); data: why")
INTERNAL_ERROR = _code(116, "internal_error", NODE, "the shard failed while running the "
                       "request (a bug; see its log): commands before the failure may have "
                       "run; data: error", uncertain=True)
EVENTS_GONE = _code(117, "events_gone", NODE, "a read of events (the bridge's repair) the shard "
                    "no longer holds (trimmed from its ring and journal): they cannot be sent "
                    "again; data: first, last", **_F)
# 120–129: the gateway's answers to a WebSocket or HTTP client (a JSON error with the name)
BAD_MESSAGE = _code(120, "bad_message", EDGE, "the gateway cannot read the message: not JSON, "
                    "not an object, too large, or a field missing or of the wrong type", **_F)
UNKNOWN_CHANNEL = _code(121, "unknown_channel", EDGE, "the gateway has no such channel "
                        "(trades, book, ticker) or op", **_F)
TOO_MANY_SUBSCRIPTIONS = _code(122, "too_many_subscriptions", EDGE, "the connection holds the "
                               "most subscriptions the gateway allows", **_F)
SLOW_CLIENT = _code(123, "slow_client", NODE, "the client fell behind (its queue filled): what "
                    "was queued is dropped and each subscription must be resynced; closed if it "
                    "keeps falling behind")
NOT_FOUND = _code(124, "not_found", EDGE, "the gateway has no such HTTP route", **_F)
GATEWAY_UNAVAILABLE = _code(125, "gateway_unavailable", NODE, "the gateway cannot serve it now "
                            "(the cluster or Redis does not answer): try again", retryable=True)
UNAUTHORIZED = _code(126, "unauthorized", IDENTITY, "a signed gateway request without its key, "
                     "timestamp or signature headers, of an unknown API key, or whose signature "
                     "does not match", **_F)
STALE_REQUEST = _code(127, "stale_request", IDENTITY, "a signed gateway request whose timestamp "
                      "is outside the receive window (check the clock)", **_F)
REPLAYED = _code(128, "replayed", IDENTITY, "a signed gateway request already received (the "
                 "same signature within the receive window)", **_F)
# 130–134: the gateway's private REST API
ADMIN_REQUIRED = _code(130, "admin_required", IDENTITY, "a gateway REST route for admin API "
                       "keys only (deposit, withdraw) asked with another key", **_F)
NO_ACCOUNT_TIER = _code(131, "no_account_tier", NODE, "a gateway REST route that needs the "
                        "account tier (balances, open orders, fills, transfers) on a cluster "
                        "without account shards", **_F)
LOGIN_REQUIRED = _code(135, "login_required", IDENTITY, "a WebSocket user-channel request before "
                       "a login (or a browser session) of an API key", **_F)
# 145–149: the gateway's browser sessions (docs/web.md)
BAD_CSRF = _code(145, "bad_csrf", IDENTITY, "a request with a session cookie that changes state "
                 "without the session's CSRF token in X-SHARDEX-CSRF, or with another one", **_F)
NO_SESSION = _code(146, "no_session", IDENTITY, "the session cookie is unknown, expired or of a "
                   "revoked API key (sessions live in the gateway's memory: a restart ends "
                   "them): log in again", **_F)
# 147–149: the gateway's operations (docs/ops.md)
SESSION_ENDED = _code(147, "session_ended", IDENTITY, "a WebSocket logged in to the user channel "
                      "by a browser session that has since been logged out or expired (or whose "
                      "API key was revoked): its user subscription stopped; log in again", **_F)
OPERATOR_REQUIRED = _code(148, "operator_required", IDENTITY, "the operator page's numbers "
                          "(GET /v1/ops) asked with a trader key: they are for admin and reader "
                          "API keys (a session of one, or a signed request)", **_F)
# -- 200–299: client-local (made by the SDK) -----------------------------------------------------
TIMEOUT = _code(200, "timeout", CLIENT, "no reply within the client's timeout: it may have run; "
                "data: after (seconds)", retryable=True, uncertain=True)
UNREACHABLE = _code(201, "unreachable", CLIENT, "the request could not be sent (no connected "
                    "peer): it never left; data: endpoint", retryable=True, refresh=True,
                    unsent=True)
MALFORMED_REPLY = _code(202, "malformed_reply", CLIENT, "a reply the client cannot read (or of "
                        "an unknown code or version): it may have run", retryable=True,
                        uncertain=True)
del _F


def code(name: str) -> int:
    """The number of the code named ``name`` (``KeyError`` if there is none)."""
    return BY_NAME[name].number


def name_of(number: object) -> str:
    """The public name of a code; ``"invalid"`` for anything that is not a known code (a newer
    peer's code, garbage), so that a name is always one of the table's."""
    if type(number) is not int:
        return "invalid"
    row = TABLE.get(number)
    return row.name if row is not None else "invalid"


def names_below(limit: int) -> tuple[str, ...]:
    """Names of the codes ``0..limit-1`` indexed by number; a number no row has (one reserved
    for later) is ``unused_N``, never a name a row could have."""
    return tuple(TABLE[n].name if n in TABLE else f"unused_{n}" for n in range(limit))


def last_command_code() -> int:
    """The highest per-command code (below ``EVENT_MAX``): the engine's counters go up to it."""
    return max(n for n in TABLE if n < EVENT_MAX)


def band_names(band: str) -> dict[int, str]:
    """number → name of the codes of one band (e.g. the account tier's ``ledger`` codes)."""
    return {n: row.name for n, row in TABLE.items() if row.band == band}


def _flags(row: Code) -> str:
    names = ("final", "retryable", "uncertain", "refresh", "unsent")
    return ", ".join(n for n in names if getattr(row, n)) or "transient"


def markdown() -> str:
    """The table as ``docs/wire.md`` shows it (between its ``codes`` markers)."""
    lines = ["| code | name | band | what a caller may do | meaning |",
             "|---:|---|---|---|---|"]  # fmt: skip
    for n in sorted(TABLE):
        row = TABLE[n]
        meaning = row.meaning.replace("|", "\\|")
        lines.append(f"| {n} | `{row.name}` | {row.band} | {_flags(row)} | {meaning} |")
    return "\n".join(lines) + "\n"


BEGIN = "<!-- codes:begin (generated: python -m shardex.wire.codes --write docs/wire.md) -->"
END = "<!-- codes:end -->"


def page_table(page: str) -> str | None:
    """The generated part of a page (between ``BEGIN`` and ``END``), None if it has none."""
    start, end = page.find(BEGIN), page.find(END)
    if start < 0 or end < start:
        return None
    return page[start + len(BEGIN):end].strip("\n") + "\n"


def write_page(path: Path) -> bool:
    """Replace the generated part of the page at ``path``; True if it changed."""
    page = path.read_text()
    if page_table(page) is None:
        raise ValueError(f"{path}: no {BEGIN!r} … {END!r} markers")
    head, rest = page.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    new = f"{head}{BEGIN}\n{markdown()}{END}{tail}"
    if new == page:
        return False
    path.write_text(new)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shardex.wire.codes", description=__doc__
                                     .split("\n", 1)[0])  # fmt: skip
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    group.add_argument("--write", type=Path, metavar="PAGE", help="update the table in PAGE")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown())
    else:
        print(f"{args.write}: {'updated' if write_page(args.write) else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

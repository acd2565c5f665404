"""Binance's error shape and codes, and shardex's result codes mapped onto them (pure).

Every refusal of the Binance-compatible routes is ``{"code": <negative int>, "msg": "..."}``
with the HTTP status Binance uses for it, so a client library raises its usual exception with
the code it knows (``-1121`` an unknown symbol, ``-2010`` an order refused, ``-2011`` a cancel
of an order that is not open, ...). The shardex reason is kept in ``msg``. docs/binance.md has
the whole map.
"""

from __future__ import annotations

UNKNOWN = -1000
DISCONNECTED = -1001
TIMEOUT = -1007
SERVER_BUSY = -1008
INVALID_TIMESTAMP = -1021
INVALID_SIGNATURE = -1022
ILLEGAL_CHARS = -1100
MANDATORY_PARAM = -1102
BAD_PARAM = -1104  # (NOT_ALL_PARAMETERS_READ: also a value the gateway cannot read)
INVALID_TIF = -1115
INVALID_ORDER_TYPE = -1116
INVALID_SIDE = -1117
BAD_SYMBOL = -1121
OPTIONAL_PARAMS_BAD_COMBO = -1128
BAD_RECV_WINDOW = -1131
FILTER_FAILURE = -1013
NEW_ORDER_REJECTED = -2010
CANCEL_REJECTED = -2011
NO_SUCH_ORDER = -2013
BAD_API_KEY_FMT = -2014
REJECTED_MBX_KEY = -2015

STATUS = {REJECTED_MBX_KEY: 401, BAD_API_KEY_FMT: 401, TIMEOUT: 503, SERVER_BUSY: 503,
          DISCONNECTED: 503, UNKNOWN: 500}  # fmt: skip  (everything else: 400)

# shardex result code name → the Binance code of a refused order (cancels: see ``cancel``)
ORDER_MAP = {
    "unknown_symbol": BAD_SYMBOL,
    "out_of_range": FILTER_FAILURE, "off_grid": FILTER_FAILURE, "price_band": FILTER_FAILURE,
    "order_too_large": FILTER_FAILURE,
    "malformed": NEW_ORDER_REJECTED, "invalid": NEW_ORDER_REJECTED,
    "duplicate_id": NEW_ORDER_REJECTED, "post_only_cross": NEW_ORDER_REJECTED,
    "insufficient_funds": NEW_ORDER_REJECTED, "unknown_asset": NEW_ORDER_REJECTED,
    "market_halted": NEW_ORDER_REJECTED, "cancel_only": NEW_ORDER_REJECTED,
    "delisted": NEW_ORDER_REJECTED, "would_trigger": NEW_ORDER_REJECTED,
    "not_allowed": REJECTED_MBX_KEY, "account_restricted": REJECTED_MBX_KEY,
    "wrong_account": REJECTED_MBX_KEY, "unknown_key": REJECTED_MBX_KEY,
    "overloaded": SERVER_BUSY,
    # the command may have run: Binance's "send status unknown" (ask the order's state)
    "timeout": TIMEOUT, "leader_changed": TIMEOUT, "unreachable": DISCONNECTED,
    "not_leader": DISCONNECTED, "unavailable": DISCONNECTED, "recovering": DISCONNECTED,
    "moving": DISCONNECTED, "halted": DISCONNECTED, "journal_unavailable": DISCONNECTED,
}  # fmt: skip
# the messages Binance clients (and their users) recognise, where Binance has a fixed one
FIXED_MSG = {
    "duplicate_id": "Duplicate order sent.",
    "insufficient_funds": "Account has insufficient balance for requested action.",
    "post_only_cross": "Order would immediately match and take.",
}


class BinanceError(Exception):
    """A refusal: Binance's code and message; ``status`` the HTTP status to answer with."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg

    @property
    def status(self) -> int:
        return STATUS.get(self.code, 400)

    def body(self) -> dict[str, object]:
        return {"code": self.code, "msg": self.msg}


def order_error(code_name: str | None, reason: str | None) -> BinanceError:
    """A refused new order (its shardex code's name and reason) as Binance says it."""
    name = code_name or ""
    code = ORDER_MAP.get(name, UNKNOWN if not name else NEW_ORDER_REJECTED)
    fixed = FIXED_MSG.get(name)
    text = f"{fixed} ({reason})" if fixed and reason else fixed or reason or "Order rejected."
    if code == FILTER_FAILURE:
        what = "LOT_SIZE" if reason and "qty" in reason else "PRICE_FILTER"
        text = f"Filter failure: {what} ({reason})"
    return BinanceError(code, f"{text} [{name}]" if name else text)


def cancel_error(code_name: str | None, reason: str | None) -> BinanceError:
    """A refused cancel: an order that is not open is Binance's ``-2011 Unknown order sent.``"""
    name = code_name or ""
    if name in ("not_live", "wrong_account", ""):
        return BinanceError(CANCEL_REJECTED, f"Unknown order sent. ({reason}) [{name}]")
    return order_error(name, reason)


def missing(param: str) -> BinanceError:
    return BinanceError(MANDATORY_PARAM, f"Mandatory parameter '{param}' was not sent, was "
                        "empty/null, or malformed.")  # fmt: skip


def bad_symbol(msg: str = "Invalid symbol.") -> BinanceError:
    return BinanceError(BAD_SYMBOL, msg)

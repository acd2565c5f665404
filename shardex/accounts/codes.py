"""Tuple layouts and codes of the account tier (commands in, events out), like ``engine.codes``.

Client commands (from the router; amounts are integer units of the asset, see ``assets``):

* ``(A_DEPOSIT, account, asset, amount, ref)`` / ``(A_WITHDRAW, account, asset, amount, ref)`` —
  ``ref`` is a unique string per transfer: a retry with the same ref and the same content is
  acknowledged again (``AE_REPEATED``) and changes nothing; another content is refused.
* ``(A_NEW, symbol, id, account, side, type, price|None, qty, tif, post_only, stp, budget|None)``
  — the engine's ``OP_NEW`` fields plus ``budget``: units of the quote asset a market *buy* may
  spend (required for it, None for every other order).
* ``(A_AMEND, symbol, id, account, qty|None, price|None)`` — the engine's ``OP_AMEND`` fields.
* ``(A_FEE_GROUP, account, group)`` — (admin) put ``account`` in fee group ``group`` (a tier
  name of the fee schedule; ``""``: none), see ``shardex.accounts.fees``.
* ``(A_RESTRICT, account, restricted)`` — (admin) restrict (True) or unrestrict an account:
  a restricted one's new orders, amends and withdrawals are refused (``account_restricted``)
* ``(A_MARGIN, account, symbol, amount, ref)`` — move ``amount`` units of perp pair ``symbol``'s
  settle asset from available into its margin (> 0) or back (< 0), forwarded to the pair's
  engine shard as ``OP_MARGIN`` (``shardex.accounts.margin``); ``ref`` as a transfer's
* ``(A_PLACE, map)`` — (admin, the mover) forward each pair's orders by this placement map from
  now on if it is newer; no event, no seq (``shardex.accounts.routing``).

Settlements (from an engine shard's ``SettlementFeed``; ``eshard`` the engine shard, ``eseq``
the engine event's seq, ``prev`` the eseq of the previous settlement on the same
engine shard → account shard link, 0 for the first):

* ``(S_TRADE, eshard, eseq, prev, symbol, price, qty, taker_account, taker_id, maker_account,
  maker_id, taker_side, trade_id)``
* ``(S_CANCELLED, eshard, eseq, prev, symbol, account, id, reason, qty)`` — the order ended with
  ``qty`` lots open (reason ``user|ioc|fok|stp``)
* ``(S_REJECTED, eshard, eseq, prev, symbol, account, id, op, code, cause)`` — the engine
  refused a forwarded ``new`` (the order never lived) or ``amend`` (the order is unchanged);
  ``cause`` is the account shard's seq of that forward (its ``AE_FORWARD`` seq)
* ``(S_AMENDED, eshard, eseq, prev, symbol, account, id, qty, price)``
* ``(S_MARGIN, eshard, eseq, prev, symbol, account, units, cause)`` — the engine moved
  ``units`` (notional units of the pair, signed) into or out of the account's margin for the
  forward with seq ``cause``; a refused one comes back as ``S_REJECTED`` with op ``OP_MARGIN``

Events (index 0 kind, index 1 the account shard's seq):

* ``(AE_BALANCE, seq, account, asset, available, held, why, ref)`` — one per (account, asset) a
  command changed, with the values after it; ``why`` is
  ``deposit|withdraw|hold|release|trade|margin`` and ``ref`` the transfer ref, order id,
  ``"t<trade_id>"`` or, for a margin move the engine shard answered, ``"m<forward seq>"``
* ``(AE_FEES, seq, asset, total)`` — the shard's fee ledger (net of rebates: it may be
  negative on a shard whose makers were paid rebates the takers' shards collected) after a
  fill moved it
* ``(AE_FILL, seq, account, symbol, id, ref, role, bps, fee, asset)`` — one side of a trade on
  order ``id`` (``ref`` ``"t<trade_id>"``, ``role`` ``maker|taker``): the rate it paid and the
  fee charged in ``asset`` units (negative: a rebate paid); before its ``AE_BALANCE`` events
* ``(AE_FEE_GROUP, seq, account, group, tier)`` — ``account`` is now in ``group``; its tier now
* ``(AE_RESTRICTED, seq, account, restricted)`` — ``account`` is (un)restricted from here on
* ``(AE_REJECTED, seq, account, ref, reason, code)`` — ``code`` a ``REJ_*`` (engine codes plus
  the ones below); nothing changed
* ``(AE_REPEATED, seq, account, ref)`` — a transfer retried with its ref: already applied
* ``(AE_FORWARD, seq, eshard, prev, cmd)`` — send the engine command ``cmd`` to engine shard
  ``eshard``; ``prev`` is the seq of the previous forward on that link (0 for the first)
* ``(AE_GAP, seq, eshard, have, prev, eseq)`` — a settlement arrived whose ``prev`` is not the
  last applied (``have``): nothing applied; the caller asks the engine shard to re-send
  ``(have, eseq]``
* ``(AE_ANOMALY, seq, eshard, eseq, reason)`` — a settlement that does not fit this shard's
  state (unknown order, qty beyond what is open, malformed): consumed, nothing changed, alert
"""

from shardex.engine.codes import REJECT_NAMES
from shardex.wire import codes as wire_codes

A_DEPOSIT, A_WITHDRAW, A_NEW, A_AMEND, A_FEE_GROUP = 1, 2, 3, 4, 5
A_PLACE = 6
A_RESTRICT = 8  # (A_RESTRICT, account, restricted): an admin's (``shardex.accounts.restrict``)
A_LIST = 9  # (A_LIST, symbol, definition, [maker, taker]): an admin's (``accounts.listing``)
S_TRADE, S_CANCELLED, S_REJECTED, S_AMENDED = 10, 11, 12, 13
S_MARGIN = 14  # (S_MARGIN, eshard, eseq, prev, symbol, account, units, cause)
A_MARGIN = 16  # (A_MARGIN, account, symbol, amount, ref): ``shardex.accounts.margin``
AE_BALANCE, AE_FEES, AE_REJECTED, AE_REPEATED, AE_FORWARD, AE_GAP, AE_ANOMALY = range(7)
AE_FILL, AE_FEE_GROUP = 7, 8
AE_RESTRICTED = 9  # (AE_RESTRICTED, seq, account, restricted)
AE_LISTED = 10  # (AE_LISTED, seq, symbol, base, quote, base unit, quote unit, [maker, taker])
AE_NAMES = ("balance", "fees", "rejected", "repeated", "forward", "gap", "anomaly", "fill",
            "fee_group", "restricted", "listed")  # fmt: skip

# Reject codes the account tier adds: the ``ledger`` band of the one code table
# (``shardex.wire.codes``), numbered after the engine's.
REJ_INSUFFICIENT_FUNDS = wire_codes.INSUFFICIENT_FUNDS
REJ_UNKNOWN_ASSET = wire_codes.UNKNOWN_ASSET
REJ_DUPLICATE_REF = wire_codes.DUPLICATE_REF
ACCOUNT_REJECT_NAMES = wire_codes.band_names(wire_codes.LEDGER)


def reject_name(code: int) -> str:
    """Public name of an engine or account reject code (``"invalid"`` for an unknown one)."""
    if 0 <= code < len(REJECT_NAMES):
        return REJECT_NAMES[code]
    return ACCOUNT_REJECT_NAMES.get(code, "invalid")

"""The account shard's ledger: balances, the order-hold record and the event helpers that every
part of ``AccountCore`` writes with (pure: no sockets, no clock, no I/O).

``AccountCore`` (``core.py``) is this base plus one mixin per concern: transfers
(``transfers.py``), new orders and amends with their holds (``holds.py``), and the engine
shards' settlements (``settlements.py``). See ``core.py`` for the money rules.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

from shardex.accounts.assets import AssetTable, Fee, Pair
from shardex.accounts.codes import (
    AE_ANOMALY,
    AE_BALANCE,
    AE_FEES,
    AE_FILL,
    AE_FORWARD,
    AE_REJECTED,
    AE_REPEATED,
    REJ_DUPLICATE_REF,
    REJ_INSUFFICIENT_FUNDS,
)
from shardex.accounts.fees import DAY_MS, FeeSchedule, Volumes, rebate
from shardex.accounts.link import Inbox, Outbox
from shardex.engine.codes import (
    BUY,
    MAX_ID_LEN,
)
from shardex.engine.markets import Market

MAX_REASON_LEN = 200
_BPS = 10_000
AVAIL, HELD = 0, 1  # a balance cell: [available, held] units (a list: updated in place)
# Transfer refs remembered for idempotency (the dedup window): the newest REF_WINDOW, oldest
# evicted first. Within it a retried deposit/withdraw is acknowledged again (AE_REPEATED) and a
# ref reused for another transfer is refused (duplicate_ref); a ref older than the window is a
# new transfer. 100,000 is ~2.8 h of admin transfers at 10/s (a client retries within seconds);
# ~25 MB of memory and ~5 MB of snapshot at most.
REF_WINDOW = 100_000


def account_shard_for(account: str, shards: int) -> int:
    """The account shard that owns ``account``: crc32 modulo M (the style of
    ``shardex.wire.protocol.shard_for``; stable across processes and hosts). With one
    account shard (the default) every string is shard 0's, without hashing it (each order
    asks twice or more: its hold, the engine shard's check, each side of its trades)."""
    if shards == 1 and type(account) is str:
        return 0
    return zlib.crc32(account.encode()) % shards


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class HeldOrder:
    """What an account shard knows of one of its open orders (from hold to end).

    ``price`` is the engine's limit price as last settled (None for a market sell); ``cap`` the
    price a buy's hold is computed at: its price, or higher while an amend that raised the price
    is in flight (``pending`` amends not yet settled). ``fee_num`` is Σ notional × bps of the
    fills so far, ``fee_charged`` = ceil(fee_num / 10000) already paid.
    """

    __slots__ = (
        "symbol",
        "side",
        "price",
        "cap",
        "rem",
        "held",
        "fee_num",
        "fee_charged",
        "maker_bps",
        "taker_bps",
        "pending",
        "opened",
    )

    def __init__(
        self,
        symbol: str,
        side: int,
        price: int | None,
        cap: int,
        rem: int,
        held: int,
        fee_num: int,
        fee_charged: int,
        maker_bps: int,
        taker_bps: int,
        pending: int,
        opened: int,
    ) -> None:
        self.symbol = symbol
        self.side = side
        self.price = price
        self.cap = cap
        self.rem = rem
        self.held = held
        self.fee_num = fee_num
        self.fee_charged = fee_charged
        self.maker_bps = maker_bps
        self.taker_bps = taker_bps
        self.pending = pending
        self.opened = opened  # this shard's seq of the forward that placed it (see _refused)

    def as_tuple(self) -> tuple:
        """The fields in ``__slots__`` order (spelled out: a compiled class has no
        ``__slots__`` to read back)."""
        return (
            self.symbol,
            self.side,
            self.price,
            self.cap,
            self.rem,
            self.held,
            self.fee_num,
            self.fee_charged,
            self.maker_bps,
            self.taker_bps,
            self.pending,
            self.opened,
        )


def required(o: HeldOrder, pair: Pair) -> int:
    """What the open remainder of ``o`` can still cost, in units of the held asset.

    Buy: ``cap × rem`` of quote plus the fee still chargeable if all of it fills at the cap as
    taker: ``ceil((fee_num + cap·rem·bps_taker) / 10000) - fee_charged``. This never grows with
    a fill (a fill moves notional at a price <= cap and a rate <= taker's out of the bound), so
    a hold once taken always covers the order. Sell: ``rem`` lots of base. A perp pair's order:
    nothing (its engine shard's margin check is the gate).
    """
    if pair.perp:
        return 0
    if o.side == BUY:
        rc = o.cap * o.rem * pair.quote_per_tick_lot
        return rc + _ceil_div(o.fee_num + rc * o.taker_bps, _BPS) - o.fee_charged
    return o.rem * pair.base_per_lot


class Ledger:
    """The state of account shard ``shard`` of ``shards`` and the helpers that change it one
    event at a time; the commands are the mixins' (see ``AccountCore``)."""

    def __init__(
        self,
        markets: Mapping[str, Market],
        shard: int = 0,
        shards: int = 1,
        fees: Mapping[str, Fee] | None = None,
        engine_for: Callable[[str], int] | None = None,
        seq: int = 0,
        ref_window: int = REF_WINDOW,
        schedule: FeeSchedule | None = None,
    ) -> None:
        if type(shards) is not int or shards < 1 or type(shard) is not int:
            raise ValueError(f"shards must be an int >= 1, got {shards!r}")
        if type(ref_window) is not int or ref_window < 1:
            raise ValueError(f"ref_window must be an int >= 1, got {ref_window!r}")
        if not 0 <= shard < shards:
            raise ValueError(f"shard must be in 0..{shards - 1}, got {shard!r}")
        self.shard = shard
        self.shards = shards
        self.table = AssetTable(markets, fees)
        # Fee tiers × markets (configuration, like the table; one ``default`` tier of the
        # per-market fees when none is given), each account's assigned group (state: set by
        # the journaled ``A_FEE_GROUP``) and 30-day volumes (state), see ``fees``.
        self.schedule = schedule or FeeSchedule.single(
            {s: p.fee for s, p in self.table.pairs.items()}, sorted(self.table.pairs)
        )
        self.groups: dict[str, str] = {}
        self.restricted: set[str] = set()  # (state: the journaled ``A_RESTRICT``, ``restrict``)
        self.volumes = Volumes(self.schedule.volume_assets)
        # Exchange time (ms since the epoch) of the command being applied, set by the node
        # loop from what it journaled with the command; None: unknown (volumes not counted).
        self.now_ms: int | None = None
        # Symbol → engine shard. Default: one engine shard. The process passes the cluster's
        # routing function (``lambda s: shard_for(s, N)``), kept out of the snapshot because it
        # is configuration, like the market table.
        self.engine_for: Callable[[str], int] = engine_for or (lambda _symbol: 0)
        self.seq = seq
        self.balances: dict[str, dict[str, list[int]]] = {}  # account → asset → [avail, held]
        self.orders: dict[tuple[str, str, str], HeldOrder] = {}  # (account, symbol, id)
        # account → (symbol, id) → each of its ``orders`` (the same ``HeldOrder``), in the order
        # they opened: reads and audit pages look an account's orders up instead of walking
        # every open order of the shard (derived state: rebuilt by ``restore``, proven by
        # ``check_integrity``). Kept inline where an order opens (``Holds._new``) and ends
        # (``Settlements._close``): two method calls cost ~1% of the core's instructions.
        self.open_by: dict[str, dict[tuple[str, str], HeldOrder]] = {}
        self.fees: dict[str, int] = {}  # the shard's fee ledger, per asset (net of rebates)
        self.rebates: dict[str, int] = {}  # rebates paid, per asset (collected = fees + rebates)
        self.deposited: dict[str, int] = {}
        self.withdrawn: dict[str, int] = {}
        self.flow: dict[str, int] = {}  # net inflow by trades (Σ over all shards is 0)
        self.margin: dict[tuple[str, str], int] = {}  # perp margin moved (``accounts.margin``)
        self.margin_moves: dict[int, tuple[str, str, int]] = {}  # (forward seq → in flight)
        # transfer ref → (op, account, asset, amount), oldest first; at most ``ref_window``
        # (state: in snapshots, so a replay evicts exactly what the live run evicted)
        self.refs: OrderedDict[str, tuple] = OrderedDict()
        self.ref_window = ref_window
        self.inbox = Inbox()  # settlements: last engine seq applied per engine shard
        self.outbox = Outbox()  # forwards: last own seq sent per engine shard
        # counters (metrics; not part of snapshots)
        self.duplicates = self.gaps = self.anomalies = 0

    def owns(self, account: object) -> TypeGuard[str]:
        if type(account) is not str:
            return False
        return self.shards == 1 or account_shard_for(account, self.shards) == self.shard

    def balance(self, account: str, asset: str) -> tuple[int, int]:
        """(available, held) in units; (0, 0) for an account or asset never seen."""
        cell = self.balances.get(account, {}).get(asset)
        return (cell[AVAIL], cell[HELD]) if cell else (0, 0)

    def rates(self, account: str, symbol: str) -> Fee:
        """The maker/taker bps an order of ``account`` on ``symbol`` placed now gets: its
        tier's (its group's or its 30-day volume's, the better)."""
        sch = self.schedule
        if len(sch.tiers) == 1:
            return sch.tiers[0].rates[symbol]
        return sch.rates(self.tier(account), symbol)

    def tier(self, account: str) -> int:
        """The index of ``account``'s tier in the schedule now."""
        sch = self.schedule
        vol = None
        if self.now_ms is not None and sch.volume_assets:
            vol = self.volumes.volume(account, self.now_ms // DAY_MS)
        return sch.tier_of(self.groups.get(account), vol)

    def _charge(
        self, acct: str, oid: str, o: HeldOrder, maker: bool, pair: Pair, notional: int,
        ref: str, out: list[tuple],
    ) -> int:  # fmt: skip
        """One fill's fee on ``o`` (negative: a rebate), booked in the fee ledger and reported
        (``AE_FILL``, and ``AE_FEES`` when the ledger moved). A fee is cumulative per order and
        rounded up; a rebate is per fill and rounded down (``fees.rebate``)."""
        bps = o.maker_bps if maker else o.taker_bps
        quote = pair.quote
        if bps >= 0:
            o.fee_num += notional * bps
            charged = -(-o.fee_num // _BPS)  # (``_ceil_div``, inline: per side of a trade)
            fee = charged - o.fee_charged
            o.fee_charged = charged
        else:
            fee = -rebate(notional, bps)
            self.rebates[quote] = self.rebates.get(quote, 0) - fee
        if self.now_ms is not None and quote in self.volumes.assets:
            self.volumes.add(acct, quote, self.now_ms // DAY_MS, notional)
        self.seq += 1
        role = "maker" if maker else "taker"
        out.append((AE_FILL, self.seq, acct, pair.symbol, oid, ref, role, bps, fee, quote))
        if fee:
            self.fees[quote] = self.fees.get(quote, 0) + fee
            self.seq += 1
            out.append((AE_FEES, self.seq, quote, self.fees[quote]))
        return fee

    def _forward(self, symbol: str, cmd: tuple, out: list[tuple]) -> int:
        eshard = self.engine_for(symbol)
        self.seq += 1
        out.append((AE_FORWARD, self.seq, eshard, self.outbox.put(eshard, self.seq), cmd))
        return self.seq

    def open_count(self, account: str) -> int:
        """How many orders ``account`` has open (a look-up)."""
        return len(self.open_by.get(account, ()))

    def _cell(self, account: str, asset: str) -> list[int]:
        """The account's [available, held] of ``asset``, made (zero) when never seen."""
        assets = self.balances.get(account)
        if assets is None:
            assets = self.balances[account] = {}
        cell = assets.get(asset)
        if cell is None:
            cell = assets[asset] = [0, 0]
        return cell

    def _found(self, account: str, asset: str) -> list[int] | None:
        """The account's [available, held] of ``asset``, or None (nothing made: a rejected
        command leaves no empty cell behind)."""
        assets = self.balances.get(account)
        return None if assets is None else assets.get(asset)

    def _total(self, asset: str) -> int:
        return self.deposited.get(asset, 0) - self.withdrawn.get(asset, 0) + self.flow.get(asset, 0)

    def _flow(self, asset: str, amount: int) -> None:
        self.flow[asset] = self.flow.get(asset, 0) + amount

    def _bal(self, out: list[tuple], account: str, asset: str, why: str, ref: str) -> None:
        cell = self.balances[account][asset]
        self.seq += 1
        out.append((AE_BALANCE, self.seq, account, asset, cell[AVAIL], cell[HELD], why, ref))

    def _seen_ref(self, ref: str, transfer: tuple, out: list[tuple]) -> bool:
        """A transfer or margin move whose ``ref`` is in the dedup window: the same one again
        is acknowledged (``AE_REPEATED``), another one refused (``duplicate_ref``); True when
        so answered (nothing else to do), False for a new ref."""
        seen = self.refs.get(ref)
        if seen is None:
            return False
        account = transfer[1]
        if seen == transfer:
            self.seq += 1
            out.append((AE_REPEATED, self.seq, account, ref))
        else:
            self._reject(account, ref, f"ref {ref} was used by another transfer",
                         REJ_DUPLICATE_REF, out)  # fmt: skip
        return True

    def _remember(self, ref: str, transfer: tuple) -> None:
        """Keep ``ref`` in the dedup window, evicting the oldest refs beyond ``ref_window``
        (count-based: the core has no clock). An evicted ref, sent again, is a new transfer."""
        refs = self.refs
        refs[ref] = transfer
        while len(refs) > self.ref_window:
            refs.popitem(last=False)

    def _insufficient(
        self, account: str, ref: str, asset: str, avail: int, need: int, out: list[tuple]
    ) -> None:
        fmt = self.table.fmt
        return self._reject(
            account,
            ref,
            f"insufficient {asset}: available {fmt(asset, avail)}, needed {fmt(asset, need)}",
            REJ_INSUFFICIENT_FUNDS,
            out,
        )

    def _reject(
        self, account: object, ref: object, reason: str, code: int, out: list[tuple]
    ) -> None:
        self.seq += 1
        out.append(
            (
                AE_REJECTED,
                self.seq,
                account if type(account) is str else "",
                ref if type(ref) is str else "",
                reason[:MAX_REASON_LEN],
                code,
            )
        )
        return None

    def _anomaly(self, eshard: object, eseq: object, reason: str, out: list[tuple]) -> None:
        self.anomalies += 1
        self.seq += 1
        out.append(
            (
                AE_ANOMALY,
                self.seq,
                eshard if type(eshard) is int else -1,
                eseq if type(eseq) is int else -1,
                reason[:MAX_REASON_LEN],
            )
        )
        return None


def _ident(value: object) -> TypeGuard[str]:
    return type(value) is str and 0 < len(value) <= MAX_ID_LEN


def _q(value: object, limit: int) -> str:
    """Client or peer input quoted in a reason: at most ``limit`` chars, and never an
    exception (``repr`` of a 1,000-deep list raises RecursionError): scalars are shown,
    containers by their type only."""
    if isinstance(value, str | bytes) and type(value) in (str, bytes):
        return repr(value[: limit + 1])[:limit]
    if value is None or type(value) in (int, float, bool):
        return repr(value)[:limit]
    return type(value).__name__


def _f(cmd: Any, i: int) -> Any:
    try:
        return cmd[i]
    except Exception:
        return None

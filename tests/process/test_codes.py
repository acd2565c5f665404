"""The one result-code table (``shardex.wire.codes``): its contract and the page made from it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from shardex.accounts import codes as account_codes
from shardex.engine import codes as engine_codes
from shardex.wire import codes

ROOT = Path(__file__).resolve().parents[2]

# The numbers and names journals and events already carry (spelled out here, not read from the
# table: a renumbering must fail this test).
CONTRACT = {
    0: "malformed", 1: "invalid", 2: "unknown_op", 3: "unknown_symbol", 4: "out_of_range",
    5: "off_grid", 6: "duplicate_id", 7: "not_live", 8: "wrong_account", 9: "post_only_cross",
    10: "amend_increase", 11: "wrong_shard", 12: "not_allowed", 13: "insufficient_funds",
    14: "unknown_asset", 15: "duplicate_ref", 16: "not_leader", 17: "moving",
    18: "would_trigger", 19: "untriggered", 20: "expired",
    25: "market_halted", 26: "cancel_only", 27: "delisted", 28: "price_band",
    29: "order_too_large", 30: "account_restricted", 31: "unit_conflict", 32: "order_too_small",
    40: "not_perp", 41: "insufficient_margin", 42: "reduce_only_rejected", 43: "no_mark",
}  # fmt: skip


def test_existing_numbers_and_names_are_kept() -> None:
    for number, name in CONTRACT.items():
        assert codes.TABLE[number].name == name
        assert codes.code(name) == number
        assert getattr(engine_codes, "REJ_" + name.upper()) == number
    assert tuple(CONTRACT[n] for n in range(21)) == engine_codes.REJECT_NAMES[:21]
    assert {v: k for k, v in CONTRACT.items()} == engine_codes.REJECT_CODES
    assert account_codes.ACCOUNT_REJECT_NAMES == {
        13: "insufficient_funds", 14: "unknown_asset", 15: "duplicate_ref", 31: "unit_conflict"
    }  # fmt: skip
    assert (account_codes.REJ_INSUFFICIENT_FUNDS, account_codes.REJ_UNKNOWN_ASSET,
            account_codes.REJ_DUPLICATE_REF) == (13, 14, 15)  # fmt: skip


def test_the_batch_and_client_codes_the_deciders_use_exist_with_their_flags() -> None:
    """What a caller may do with each batch-level and client-local error, as specified (the
    SDK's, loadgen's and the bridge's decisions read only these flags)."""
    expected = {  # name: (final, retryable, uncertain, refresh, unsent)
        "not_leader": (False, True, False, True, False),
        "overloaded": (False, False, False, False, False),
        "unavailable": (False, True, False, False, False),
        "recovering": (False, True, False, False, False),
        "leader_changed": (False, True, True, False, False),
        "journal_unavailable": (False, False, False, False, False),
        "internal_error": (False, False, True, False, False),
        "timeout": (False, True, True, False, False),
        "unreachable": (False, True, False, True, True),
        "malformed_reply": (False, True, True, False, False),
        "internal_op": (True, False, False, False, False),
        "unknown_key": (True, False, False, False, False),
        "events_gone": (True, False, False, False, False),
    }
    for name, flags in expected.items():
        row = codes.BY_NAME[name]
        assert (row.final, row.retryable, row.uncertain, row.refresh, row.unsent) == flags, name


def test_table_is_consistent() -> None:
    assert sorted(codes.TABLE) == sorted({row.number for row in codes.BY_NAME.values()})
    for n, row in codes.TABLE.items():
        assert row.number == n and re.fullmatch(r"[a-z][a-z_]*", row.name), row
        assert row.band in codes.BANDS and row.meaning, row
        assert not (row.final and (row.retryable or row.uncertain or row.refresh)), row
        assert not row.unsent or (row.retryable and not row.uncertain), row
        assert (row.band == codes.CLIENT) == (n >= codes.BATCH_MAX), row
        assert 0 <= n < 300, row
        assert getattr(codes, row.name.upper()) == n  # each row is a module constant
    # dense up to 20; the numbers after it are allocated in ranges (20-24: expiring orders,
    # 25-34: markets at runtime, 40-49: perpetual-futures markets)
    assert [n for n in codes.TABLE if n < 21] == list(range(21))
    assert [n for n in codes.TABLE if 21 <= n < codes.EVENT_MAX] == [*range(25, 33), *range(40, 44)]
    assert {row.band for row in codes.TABLE.values()} == set(codes.BANDS)


def test_name_of_unknown_is_invalid() -> None:
    assert codes.name_of(202) == "malformed_reply" and codes.name_of(16) == "not_leader"
    for bad in (None, -1, 99, 1000, True, "3", 2.0):
        assert codes.name_of(bad) == "invalid"


def test_docs_page_holds_the_generated_table() -> None:
    page = (ROOT / "docs" / "wire.md").read_text()
    assert codes.page_table(page) == codes.markdown(), (
        "docs/wire.md is stale: run python -m shardex.wire.codes --write docs/wire.md")
    for n, row in codes.TABLE.items():
        assert f"| {n} | `{row.name}` |" in page


def test_write_page_updates_only_the_generated_part(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(f"# head\n\n{codes.BEGIN}\n| stale |\n{codes.END}\ntail\n")
    assert codes.write_page(page) and not codes.write_page(page)
    text = page.read_text()
    assert text.startswith("# head\n") and text.endswith(f"{codes.END}\ntail\n")
    assert codes.page_table(text) == codes.markdown()


def test_cli_prints_the_markdown() -> None:
    out = subprocess.run([sys.executable, "-m", "shardex.wire.codes", "--markdown"],
                         capture_output=True, text=True, check=True, cwd=ROOT)  # fmt: skip
    assert out.stdout == codes.markdown()

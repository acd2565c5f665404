"""``shardex deposit``, ``shardex withdraw`` and ``shardex balance`` as a user runs them, against a
real cluster with an account shard (real ZeroMQ, CURVE keys): the first test runs each command
and exit status once as its own process (``python -m shardex.cli``); the rest run the same
click commands in this process (click's ``CliRunner``: the same code from argv to exit status,
without a Python start per command).

Checked: what each command prints and its exit status, the balances it leaves (read back both by
``shardex balance`` and by the SDK, another path), and that each refusal names its stable code:
a reject of the account shard exits 1 with ``rejected (CODE)``; an amount the CLI itself
refuses before sending anything (not a number, negative, zero) is a usage error, exit 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal

import pytest
from click.testing import CliRunner

from shardex.cli import main
from tests.support.cluster import ROOT, Cluster


@pytest.fixture(scope="module")
def funded() -> Iterator[Cluster]:
    cl = Cluster(1, accounts=1)
    try:
        yield cl
    finally:
        cl.stop()


def shardex(cl: Cluster, *args: str) -> subprocess.CompletedProcess:
    """One ``shardex`` command against ``cl``, as a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "shardex.cli", *args, "--endpoint", cl.endpoint, *cl.key_args()],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


def invoke(cl: Cluster, *args: str) -> subprocess.CompletedProcess:
    """The same command in this process (click's runner), told as a finished process."""
    res = CliRunner().invoke(main, [*args, "--endpoint", cl.endpoint, *cl.key_args()])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception  # a crash is a failure of its own, not an exit status
    return subprocess.CompletedProcess(args, res.exit_code, res.stdout, res.stderr)


def balances(cl: Cluster, account: str) -> dict[str, list[str]]:
    """``shardex balance ACCOUNT --json``: asset -> [available, held]."""
    out = invoke(cl, "balance", account, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def sdk_available(cl: Cluster, account: str, asset: str) -> Decimal:
    with cl.client() as c:
        return Decimal(str(c.balance(account)[asset][0]))


def test_deposit_withdraw_and_balance_move_money_exactly(funded: Cluster) -> None:
    out = shardex(funded, "deposit", "cli-a", "USD", "100.50", "--ref", "cli-d1")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "cli-a USD: available 100.500000, held 0.000000\n"
    again = invoke(funded, "deposit", "cli-a", "USD", "100.50", "--ref", "cli-d1")
    assert again.returncode == 0, again.stderr  # the same ref: applied once, said so
    assert again.stdout.endswith("(already applied)\n"), again.stdout
    out = shardex(funded, "withdraw", "cli-a", "USD", "0.51")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "cli-a USD: available 99.990000, held 0.000000\n"
    assert balances(funded, "cli-a") == {"USD": ["99.990000", "0.000000"]}
    assert sdk_available(funded, "cli-a", "USD") == Decimal("99.99")  # read another way
    table = shardex(funded, "balance", "cli-a")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[1].split() == ["USD", "99.990000", "0.000000"]
    empty = invoke(funded, "balance", "cli-nobody")
    assert empty.returncode == 0 and "(no balances for cli-nobody)" in empty.stdout
    poor = shardex(funded, "withdraw", "cli-a", "USD", "100")  # the process's exit status too
    assert poor.returncode == 1 and "withdraw rejected (insufficient_funds):" in poor.stderr
    assert balances(funded, "cli-a") == {"USD": ["99.990000", "0.000000"]}


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("withdraw", "cli-b", "USD", "1000"), "insufficient_funds"),  # holds only 10
        (("withdraw", "cli-poor", "USD", "1"), "insufficient_funds"),  # holds nothing
        (("deposit", "cli-b", "USD", "1.0000001"), "off_grid"),  # finer than USD's 0.000001
        (("deposit", "cli-b", "USD", "99999999999999999999999"), "out_of_range"),
        (("deposit", "cli-b", "XYZ", "1"), "unknown_asset"),
    ],
)
def test_a_refused_transfer_names_its_code_and_moves_nothing(
    funded: Cluster, args: tuple[str, ...], code: str
) -> None:
    invoke(funded, "deposit", "cli-b", "USD", "10", "--ref", "cli-b-fund")  # (once: same ref)
    before = balances(funded, "cli-b")
    assert before == {"USD": ["10.000000", "0.000000"]}
    out = invoke(funded, *args)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert f"{args[0]} rejected ({code}):" in out.stderr and "Traceback" not in out.stderr
    assert out.stdout == ""
    assert balances(funded, "cli-b") == before
    assert balances(funded, "cli-poor") == {}


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("withdraw", "cli-c", "USD", "abc"), "is not a positive amount"),
        (("deposit", "cli-c", "USD", "1e3"), "is not a positive amount"),  # no exponents
        (("deposit", "cli-c", "USD", "-5"), "is negative"),
        (("deposit", "cli-c", "USD", "0"), "is zero"),
        (("withdraw", "cli-c", "USD", "0.000"), "is zero"),
    ],
)
def test_a_bad_amount_is_a_usage_error_before_anything_is_sent(
    funded: Cluster, args: tuple[str, ...], said: str
) -> None:
    out = invoke(funded, *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert said in out.stderr and "Traceback" not in out.stderr
    assert balances(funded, "cli-c") == {}  # nothing reached the account shard

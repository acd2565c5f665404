"""Every fenced code block of README.md and docs/ runs in a test, and the docs build as a site.

The rule (docs/test-suite.md says it for readers): each block has a language, and

* ``python`` blocks run as pasted, each in a fresh interpreter, against one small real cluster
  started once for this module (1 engine shard, 1 account shard, embedded Redis and bridge); only
  ports change (``tcp://127.0.0.1:5555`` and Redis ``port=5559`` become the cluster's), and
  the working directory holds the cluster's ``data`` dir, as a user's would;
* ``sh`` blocks: every ``shardex ...`` line is parsed by the real command line (an unknown command
  or option fails); the read-only ones run against the cluster; ``python bench/X.py`` lines name
  a script that accepts every option given; ``python -c`` lines run; a block with a heredoc runs
  as a script, and a ``text`` block right after it is its exact output;
* ``text`` blocks (output, diagrams, layouts) are compared with what they show where a test can
  (``CHECKED_TEXT`` below, by first line); the rest are listed in ``ILLUSTRATIONS``, so a new
  block nobody decided about fails;
* ``toml`` blocks are markets files, ``yaml``/``json`` blocks must parse.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import redis
import yaml
from click.testing import CliRunner

from shardex.cli import main as cli
from shardex.config import load_fees, load_markets
from shardex.datadir import ShardDir
from shardex.placement import RebuildError, initial, placed, rebuild
from tests.support.cluster import ROOT, Cluster
from tests.support.ports import listening, wait_listening
from tests.support.wait import wait_until

DOCS = ROOT / "docs"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```$", re.M | re.S)
LANGS = {"python", "sh", "text", "toml", "yaml", "json"}
# shell lines run as written against the test cluster: read-only, and they end by themselves
RUNNABLE = {"status", "book", "journal", "balance", "orders", "audit", "placement"}
# heads of shell lines that are not shardex's (installers, other tools, continuation lines)
OTHER_TOOLS = {"pip", "bash", "honcho", "prometheus", "docker", "kubectl", "redis-server", "cat",
               "etcd", "-v"}  # fmt: skip


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language and its text."""

    path: Path
    line: int
    lang: str
    body: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def first(self) -> str:
        return self.body.splitlines()[0] if self.body else ""


def pages() -> list[Path]:
    """README first, then docs/ in name order (a stable order for the examples that build on
    each other's trades)."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def blocks(lang: str | None = None) -> list[Block]:
    found = []
    for path in pages():
        text = path.read_text()
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append(Block(path, line, m.group(1).strip(), m.group(2)))
    return [b for b in found if lang is None or b.lang == lang]


def following(block: Block) -> Block | None:
    """The block right after ``block`` on its page, if any."""
    same = [b for b in blocks() if b.path == block.path]
    later = [b for b in same if b.line > block.line]
    return later[0] if later else None


def test_every_block_has_a_known_language():
    bad = [f"{b.where}: {b.lang or '(none)'}" for b in blocks() if b.lang not in LANGS]
    assert not bad, f"fence every block as one of {sorted(LANGS)}: {bad}"


# -- the cluster every python block and the runnable shell lines use --------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("docs")


@pytest.fixture(scope="module")
def cluster(workdir) -> Iterator[Cluster]:
    c = Cluster(1, redis="embedded", data_dir=str(workdir / "data"), accounts=1, gateways=1,
                without=())  # up's default (also the candles worker and the history writer)
    try:
        yield c
    finally:
        c.stop()


def env_for(cluster: Cluster) -> dict[str, str]:
    """As a user's shell in the cluster's directory: no SHARDEX_KEY (conftest sets "none"), so
    commands and examples find ./data/keys/admin.key by themselves, as the docs promise."""
    env = {k: v for k, v in os.environ.items() if k != "SHARDEX_KEY"}
    return {**env, "SHARDEX_BASE_PORT": str(cluster.layout.base_port)}


@dataclass(frozen=True)
class Ran:
    """What a command printed and how it ended."""

    returncode: int
    stdout: bytes
    stderr: bytes


def run_cli(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> Ran:
    """``shardex argv`` in this process (click's runner: no interpreter start per line), in
    ``cwd`` with exactly ``env`` as its environment, as a shell would run it."""
    env = dict(os.environ) if env is None else env
    changes: dict[str, str | None] = {k: None for k in os.environ if k not in env}
    changes.update({k: v for k, v in env.items() if os.environ.get(k) != v})
    before = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner(env=changes).invoke(cli, argv, prog_name="shardex")
    finally:
        os.chdir(before)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout_bytes, result.stderr_bytes or b"")


# what some python blocks print, checked (page name → check of its stdout)
def _intro(out: str) -> None:
    lines = out.splitlines()
    assert lines[0] == "True None", out
    available, held = (s.strip("() Decimal'") for s in lines[1].split(","))
    assert float(available) >= 0 and float(held) >= 0, out


def _sdk(out: str) -> None:
    # (the line after the count names each refused command's index, code and reason)
    assert "301 of 301 ok\n[]\n" in out, out


def _identity(out: str) -> None:
    assert out.splitlines() == ["True", "account bob not allowed for this key"], out


def _consumer(out: str) -> None:
    # the README example's BTC-USD trade reached the consumer group through the bridge
    assert "booked 1 0.1000 @ 30000.50" in out, out


def _rest(out: str) -> None:
    assert out.split() == ["200", "alice"], out  # a signed request the gateway accepted


OUTPUT_CHECKS: dict[str, list[Callable[[str], None]]] = {
    "README.md": [_intro],
    "using.md": [_sdk],
    "identity.md": [_identity],
    "streams.md": [_consumer],
    "gateway-rest.md": [_rest],
}


def test_python_blocks_run_as_pasted(cluster, workdir):
    # the Identity page's example uses the key its `shardex keys add` line creates
    add = run_cli(["keys", "add", "--account", "alice", "--api"], workdir, env_for(cluster))
    assert add.returncode == 0, add.stderr.decode()
    outputs: dict[str, list[str]] = {}
    examples = blocks("python")
    assert len(examples) >= 4
    for b in examples:
        code = b.body.replace("tcp://127.0.0.1:5555", cluster.endpoint).replace(
            "port=5559", f"port={cluster.layout.redis_port}"
        ).replace("127.0.0.1:5641", f"127.0.0.1:{cluster.layout.gateway_port(0)}")
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            timeout=60,
            cwd=workdir,
            env=env_for(cluster),
        )
        assert proc.returncode == 0, f"{b.where} failed:\n{code}\n{proc.stderr.decode()}"
        outputs.setdefault(b.path.name, []).append(proc.stdout.decode())
    for page, checks in OUTPUT_CHECKS.items():
        assert len(outputs.get(page, [])) >= len(checks), f"{page}: fewer python blocks"
        for check, out in zip(checks, outputs[page], strict=False):
            check(out)


# -- shell blocks ------------------------------------------------------------------------------


def shell_lines(block: Block) -> list[str]:
    """A block's commands: continuation lines joined, comments and a trailing ``&`` dropped."""
    joined = block.body.replace("\\\n", " ")
    lines = []
    for line in joined.splitlines():
        line = line.split("  #", 1)[0].strip()
        if line.endswith("&"):
            line = line[:-1].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def parse_only(argv: list[str]) -> click.Context:
    """Parse ``shardex argv`` with the real click command without running it: an unknown
    command, option or bad value raises ``click.ClickException``."""
    cmd: click.Command = cli
    ctx: click.Context | None = None
    name, args = "shardex", list(argv)
    while True:
        ctx = cmd.make_context(name, args, parent=ctx)
        if not isinstance(cmd, click.Group):
            return ctx
        # click ≥ 8.2 keeps the subcommand's name apart in ``_protected_args``
        protected = ctx._protected_args if hasattr(ctx, "_protected_args") else ctx.protected_args
        rest = [*protected, *ctx.args]
        sub_name, sub, args = cmd.resolve_command(ctx, rest)
        assert sub is not None, argv
        name, cmd = sub_name or "", sub


def heredoc_blocks() -> list[Block]:
    return [b for b in blocks("sh") if "<<'EOF'" in b.body]


def plain_sh_blocks() -> list[Block]:
    return [b for b in blocks("sh") if "<<'EOF'" not in b.body]


def test_every_shardex_line_parses(cluster, workdir):
    """Every ``shardex`` line of every sh block is a real command with real options; the
    read-only ones run against the cluster and print something."""
    env = env_for(cluster)
    parsed = ran = 0
    for b in plain_sh_blocks():
        for line in shell_lines(b):
            argv = shlex.split(line)
            if argv[0] != "shardex":
                continue
            try:
                parse_only(argv[1:])
            except click.ClickException as exc:
                pytest.fail(f"{b.where}: `{line}`: {exc.format_message()}")
            except click.exceptions.Exit as exc:  # `--help` prints and exits 0
                assert exc.exit_code == 0, line
            parsed += 1
            if argv[1] in RUNNABLE:
                proc = run_cli(argv[1:], workdir, env)
                assert proc.returncode == 0, f"{b.where}: `{line}`:\n{proc.stderr.decode()}"
                assert proc.stdout.strip(), line
                ran += 1
    assert parsed >= 30 and ran >= 5, (parsed, ran)


def test_other_shell_lines(tmp_path):
    """Lines that are not shardex's: bench scripts accept the options given, ``python -c``
    lines run, and every other head is a known tool (so a typo'd command cannot hide)."""
    helps: dict[str, str] = {}
    for b in plain_sh_blocks():
        for line in shell_lines(b):
            argv = shlex.split(line)
            while re.fullmatch(r"SHARDEX_[A-Z_]+=\S*", argv[0]):  # an environment prefix
                argv.pop(0)
            head = argv[0]
            if head in ("python", "python3") and argv[1] == "-c":
                proc = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, timeout=30,
                                      capture_output=True)  # fmt: skip
                assert proc.returncode == 0, f"{b.where}: `{line}`:\n{proc.stderr.decode()}"
            elif head in ("python", "python3") and argv[1] == "-m":  # a module that exists
                assert importlib.util.find_spec(argv[2]), f"{b.where}: no module {argv[2]}"
            elif head in ("python", "python3"):
                script = ROOT / argv[1]
                assert script.is_file(), f"{b.where}: {argv[1]} does not exist"
                if argv[1] not in helps:
                    proc = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT,
                                          capture_output=True, timeout=60)  # fmt: skip
                    assert proc.returncode == 0, f"{argv[1]} --help: {proc.stderr.decode()}"
                    helps[argv[1]] = proc.stdout.decode()
                for opt in (a.split("=", 1)[0] for a in argv[2:] if a.startswith("--")):
                    assert opt in helps[argv[1]], f"{b.where}: {argv[1]} has no {opt}"
            else:
                assert head == "shardex" or head in OTHER_TOOLS, f"{b.where}: `{line}`"
    assert helps, "no bench line found"


def test_heredoc_blocks_print_what_the_next_block_shows(tmp_path):
    found = heredoc_blocks()
    assert found
    for b in found:
        script = b.body.replace("shardex ", f"{sys.executable} -m shardex.cli ")
        proc = subprocess.run(["bash", "-e", "-c", script], capture_output=True, timeout=30,
                              cwd=tmp_path)  # fmt: skip
        assert proc.returncode == 0, f"{b.where}: {proc.stderr.decode()}"
        shown = following(b)
        assert shown is not None and shown.lang == "text", f"{b.where}: no output block after it"
        got = proc.stdout.decode().splitlines() + proc.stderr.decode().splitlines()
        assert got == shown.body.splitlines(), f"{shown.where} is not what {b.where} prints"


def test_keys_lines_run_as_written(tmp_path):
    """The Identity page's `shardex keys` lines, in order, in a fresh directory."""
    sh = plain_sh_blocks()
    lines = [ln for b in sh for ln in shell_lines(b) if ln.startswith("shardex keys ")]
    assert len(lines) >= 4
    env = {k: v for k, v in os.environ.items() if k not in ("SHARDEX_KEY", "SHARDEX_DATA_DIR")}
    for line in lines:
        proc = run_cli(shlex.split(line)[1:], tmp_path, env)
        assert proc.returncode == 0, f"{line}:\n{proc.stderr.decode()}"
    listing = run_cli(["keys", "list"], tmp_path, env).stdout.decode()
    assert "desk" in listing and "dashboard" in listing and "revoked" in listing


# -- text blocks: output, diagrams and layouts -------------------------------------------------


def _pattern(line: str) -> str:
    """A line of output with what varies between clusters (endpoints, paths, numbers) masked."""
    line = re.sub(r"(tcp|http|redis)://\S+", "URL", line)
    line = re.sub(r"(?<=\s)/\S+", "PATH", line)
    return re.sub(r"\d+", "N", line).rstrip()


def check_up_output(block: Block, cluster: Cluster, workdir: Path) -> None:
    """Every line the page shows is a line `shardex up` printed for the test cluster, up to
    ports, paths and counts."""
    printed = {_pattern(line) for line in cluster.log_path.read_text(errors="replace").splitlines()}
    shown = block.body.splitlines()[1:]  # (the first is the command)
    missing = [line for line in shown if _pattern(line) not in printed]
    assert not missing, f"{block.where}: shardex up prints no such line: {missing}"


def check_procfile(block: Block, cluster: Cluster, workdir: Path) -> None:
    lines = (ROOT / "Procfile").read_text().splitlines()
    assert block.body.splitlines() == [ln for ln in lines if ln and not ln.startswith("#")]


def check_env(block: Block, cluster: Cluster, workdir: Path) -> None:
    assert block.body == (ROOT / ".env").read_text()


def check_same_diagram(block: Block, cluster: Cluster, workdir: Path) -> None:
    """README's diagram and the site's home page show the same one."""
    twins = [b for b in blocks("text") if b.first == block.first]
    assert {b.path.name for b in twins} == {"README.md", "index.md"}, [b.where for b in twins]
    assert len({b.body for b in twins}) == 1, "README.md and docs/index.md diagrams differ"


def check_package_tree(block: Block, cluster: Cluster, workdir: Path) -> None:
    """Every module and package the tree names exists under shardex/."""
    names = set(re.findall(r"\b([a-z_]+\.py)\b", block.body))
    dirs = set(re.findall(r"^  ([a-z]+)/", block.body, re.M))
    have = {p.name for p in (ROOT / "shardex").rglob("*.py")}
    assert names - have == set(), f"{block.where}: no such module {sorted(names - have)}"
    assert all((ROOT / "shardex" / d).is_dir() for d in dirs), dirs


def check_shard_count_refusal(block: Block, cluster: Cluster, workdir: Path) -> None:
    """The refusal is what the placement map's rebuild says for the pairs the page names."""
    dirs = [
        ShardDir(0, Path("/srv/data/shard-0"), set()),
        ShardDir(1, Path("/srv/data/shard-1"), {"ETH-USD", "SOL-USD"}),
    ]
    with pytest.raises(RebuildError) as refusal:
        rebuild(initial(1), 1, placed(dirs))
    text = f"Error: refusing to start 1 shard(s) on data dir /srv/data: {refusal.value}"
    assert " ".join(block.body.split()) == " ".join(text.split())


def check_status_unreachable(block: Block, cluster: Cluster, workdir: Path) -> None:
    """`shardex status` where nothing runs says what the page shows (when the default port is
    free on this box; otherwise only the command and the error's start)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDEX_")}
    empty = workdir / "empty"
    empty.mkdir(exist_ok=True)
    proc = run_cli(["status"], empty, env)
    assert proc.returncode != 0
    shown = block.body.split("\n", 1)[1]
    if listening(5555):
        assert proc.stderr.decode().startswith("Error: cannot reach tcp://127.0.0.1:5555")
    else:
        assert " ".join(proc.stderr.decode().split()) == " ".join(shown.split())


def check_open_orders(block: Block, cluster: Cluster, workdir: Path) -> None:
    """The header of `shardex orders` is the page's, and alice's rows have its columns."""
    proc = run_cli(["orders", "alice"], workdir, env_for(cluster))
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode().splitlines()
    shown = block.body.splitlines()
    assert out[0].split() == shown[1].split()
    assert all(len(r.split()) == len(shown[2].split()) for r in out[1:] if r[:1] != "("), out


def check_balances_stream(block: Block, cluster: Cluster, workdir: Path) -> None:
    """The field names the page shows are those the bridge writes to shardex:balances:0."""
    users = json.loads((workdir / "data" / "keys" / "redis.json").read_text())["users"]
    r = redis.Redis(port=cluster.layout.redis_port, username="reader",
                    password=users["reader"]["password"], decode_responses=True)  # fmt: skip
    def balances() -> list[dict]:
        return [f for _, f in r.xrange("shardex:balances:0") if f.get("ev") == "balance"]

    if not balances():  # run before the python blocks, or on another xdist worker than them
        with cluster.client() as c:
            assert c.deposit("docs-check", "USD", "1", ref="docs-check-balances").ok
    entries = wait_until(balances, 30, "a balance entry in shardex:balances:0")
    shown = [ln.split()[1:] for ln in block.body.splitlines()[1:] if ln[:1].isdigit()]
    for words in shown:
        names = {w for w in words[0::2] if w != "..."}
        assert names <= set(entries[0]), f"{block.where}: {names - set(entries[0])}"


CHECKED_TEXT: dict[str, Callable[[Block, Cluster, Path], None]] = {
    "$ shardex up --shards 2": check_up_output,
    "redis: shardex redis": check_procfile,
    "SHARDEX_ROUTERS=auto": check_env,
    "  clients · loadgen · CLI  (the SDK)": check_same_diagram,
    "shardex/": check_package_tree,
    "Error: refusing to start 1 shard(s)": check_shard_count_refusal,
    "$ shardex status": check_status_unreachable,
    "$ shardex orders alice": check_open_orders,
    "XRANGE shardex:balances:0 - +": check_balances_stream,
}
# text blocks no test can compare (diagrams of a flow); a new one must be added here or above
ILLUSTRATIONS = {
    "client ─new/amend─▶ router ──(crc32(account) % M)──▶ account shard j  [AccountCore]",
}


def _check_of(block: Block) -> Callable[[Block, Cluster, Path], None] | None:
    return next((f for first, f in CHECKED_TEXT.items() if block.first.startswith(first)), None)


def test_every_text_block_is_checked_or_an_illustration():
    outputs = {following(b) for b in heredoc_blocks()}
    bad = [
        f"{b.where}: {b.first!r}"
        for b in blocks("text")
        if b not in outputs and _check_of(b) is None and b.first.rstrip() not in ILLUSTRATIONS
    ]
    assert not bad, f"add a check to CHECKED_TEXT or the block to ILLUSTRATIONS: {bad}"


def test_text_blocks_show_what_the_code_does(cluster, workdir):
    # after the python blocks (module order): alice has orders, the balances stream has entries
    checked = 0
    for b in blocks("text"):
        check = _check_of(b)
        if check is not None:
            check(b, cluster, workdir)
            checked += 1
    assert checked >= len(CHECKED_TEXT)


def test_config_blocks_parse(tmp_path):
    for b in blocks("toml"):
        path = tmp_path / "markets.toml"
        path.write_text(b.body)
        assert tomllib.loads(b.body) and load_markets(path), b.where
        load_fees(path, load_markets(path))  # (a [fees] schedule in it is checked too)
    for b in blocks("yaml"):
        assert yaml.safe_load(b.body) is not None, b.where
    for b in blocks("json"):
        json.loads(b.body)


# -- names the docs use exist -------------------------------------------------------------------

PATH_REF = re.compile(r"(?<![\w/.-])((?:shardex|tests|bench|grafana)/[\w./-]*\w)(?![\w*<])")
NOT_PATHS = {"grafana/grafana"}  # a docker image


def test_every_repository_path_the_docs_name_exists():
    """`shardex/...`, `tests/...`, `bench/...` and `grafana/...` paths in README and the pages
    exist: a moved or renamed file shows up here, with the page to fix."""
    stale = []
    for page in pages():
        for m in PATH_REF.finditer(page.read_text()):
            path = m.group(1).rstrip(".")
            if path not in NOT_PATHS and not (ROOT / path).exists():
                stale.append(f"{page.relative_to(ROOT)}: {path}")
    assert not stale, stale


def test_every_environment_variable_the_docs_name_is_read():
    # (the package's variables, and the suite's own: tests/conftest.py reads SHARDEX_TESTS_*,
    # tests/support/ the worker's ports, tests/run.sh SHARDEX_TEST_WORKERS)
    files = [*(ROOT / "shardex").rglob("*.py"), *(ROOT / "tests").rglob("*.py"),
             ROOT / "tests" / "run.sh"]  # fmt: skip
    code = "\n".join(p.read_text() for p in files if p.name != "test_docs.py")
    names = {m for page in pages() for m in re.findall(r"\bSHARDEX_[A-Z0-9_]*[A-Z0-9]\b",
                                                       page.read_text())}  # fmt: skip
    assert names and {n for n in names if n not in code} == set()


# metrics a 1-shard cluster without replicas does not export
REPLICA_ONLY = ("shardex_replica_", "shardex_accounts_replica_", "shardex_bridge_stale_epoch")


def test_every_metric_the_docs_name_is_exported(cluster):
    """Each ``shardex_*`` metric named in the docs is exported by the test cluster (router,
    engine shard, account shard, bridge; histograms and counters by prefix) or, for a labelled
    family that has no sample yet, defined by that name in the code."""
    lay = cluster.layout
    ports = [lay.router_metrics(0), lay.shard_metrics_port(0), lay.account_metrics_port(0),
             lay.bridge_metrics_port]  # fmt: skip
    wait_listening(ports)  # (the bridge binds its exporter once it has reached Redis)
    samples: set[str] = set()
    families: set[str] = set()
    for port in ports:
        with urllib.request.urlopen(f"http://{lay.host}:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        samples |= {ln.split("{")[0].split(" ")[0] for ln in text.splitlines() if ln[:1] != "#"}
        # a labelled family without samples yet still has its TYPE line (counters without _total)
        families |= {ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE ")}
    named = {m for page in pages() for m in re.findall(r"(?<![…\w])shardex_[a-z0-9_]*[a-z0-9]",
                                                       page.read_text())}  # fmt: skip
    named = {n for n in named if not n.startswith(REPLICA_ONLY)}
    # a labelled family shows only once a label has a value (a conflict, a trade): such a name
    # must then be defined literally in the code
    code = "\n".join(p.read_text() for p in (ROOT / "shardex").rglob("*.py"))
    missing = {
        n
        for n in named
        if n.removesuffix("_total") not in families
        and not any(s == n or s.startswith(n + "_") for s in samples)
        and f'"{n}"' not in code
        and f'"{n.removesuffix("_total")}"' not in code
    }
    assert len(named) > 30 and not missing, sorted(missing)


# -- the site ----------------------------------------------------------------------------------


def _nav_files(nav: list) -> Iterator[str]:
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            yield from _nav_files(value)
        else:
            yield value


def test_nav_lists_every_page_and_every_nav_page_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = list(_nav_files(config["nav"]))
    missing = {f for f in nav if not (DOCS / f).is_file()}
    assert missing == set(), f"the nav names pages that do not exist: {missing}"
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert on_disk - set(nav) == set(), f"pages missing from mkdocs.yml's nav: {on_disk - set(nav)}"


def test_site_builds_in_strict_mode(tmp_path):
    """A broken link, a missing anchor or a page outside the nav fails the build."""
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert (tmp_path / "site" / "architecture" / "index.html").is_file()


# -- no issue numbers in code ------------------------------------------------------------------

ISSUE_NUMBER = re.compile(r"\bissue #?\d+", re.I)
# lines allowed to name an issue number, as (path, a piece of the line)
ISSUE_NUMBER_ALLOWED = {
    # quotes the old `up --help` text the test proves is gone
    ("tests/process/test_endpoints.py", 'needs Redis)": tracker numbers'),
}


def test_code_names_no_issue_numbers():
    """A comment says what it means, not which issue it came from: a number tells a reader
    nothing without the tracker (what each issue decided is in docs/decisions/)."""
    found = []
    for top in ("shardex", "bench", "scripts", "tests"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if ISSUE_NUMBER.search(line) and not any(
                    rel == where and piece in line for where, piece in ISSUE_NUMBER_ALLOWED
                ):
                    found.append(f"{rel}:{n}: {line.strip()}")
    assert found == [], "issue numbers in code:\n" + "\n".join(found)

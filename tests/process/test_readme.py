"""README is the map: at most 10 KB, the two set-up commands as written, an index that reaches
every page. Its code blocks run with every other page's in tests/process/test_docs.py."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml

from tests.support.cluster import ROOT

README = (ROOT / "README.md").read_text()
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


def sh_blocks() -> list[str]:
    return [m.group(1) for m in re.finditer(r"^```sh\n(.*?)^```$", README, re.M | re.S)]


def test_readme_is_a_map_of_at_most_10_kb():
    assert len(README.encode()) <= 10 * 1024, len(README.encode())


def test_the_two_set_up_commands_come_first_as_written():
    """One installs and starts a cluster, one installs what the tests need and runs them
    (tests/run.sh, which .ci/run runs too)."""
    first, second = sh_blocks()[:2]
    assert first == "pip install -e '.[dev]' && shardex up\n"
    assert second == "bash tests/run.sh\n"
    assert "bash tests/run.sh" in (ROOT / ".ci" / "run").read_text()


def nav_pages() -> set[str]:
    """Every page mkdocs.yml's nav names (tests/process/test_docs.py checks that only pages still
    being written elsewhere may be missing from docs/)."""
    found: set[str] = set()

    def walk(items: list) -> None:
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            if isinstance(value, list):
                walk(value)
            else:
                found.add(f"docs/{value}")

    walk(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    return found


def test_every_link_resolves_and_every_page_is_indexed():
    targets = {m.group(1) for m in LINK.finditer(README) if "://" not in m.group(1)}
    missing = {t for t in targets if not (ROOT / t).exists() and t not in nav_pages()}
    assert not missing, missing
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")} - {"docs/index.md"}
    assert pages - targets == set(), f"README's index misses {pages - targets}"
    assert "docs/decisions/index.md" in targets


def test_top_level_help():
    proc = subprocess.run(
        [sys.executable, "-m", "shardex.cli", "--help"], capture_output=True, timeout=30
    )
    assert proc.returncode == 0
    for sub in ("up", "status", "book", "replay", "journal", "tail", "loadgen", "bridge"):
        assert f"  {sub} " in proc.stdout.decode(), sub

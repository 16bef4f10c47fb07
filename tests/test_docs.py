"""README.md and docs/: short enough to read, every command runnable from a fresh shell, no
dead link, and the code cites the design that exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) < 250


def test_readme_commands_use_the_projects_environment() -> None:
    """A fresh shell has no `fedsilo`, and its `python` lacks the project's packages."""
    for block in FENCE.findall(README.read_text()):
        for line in block.splitlines():
            command = line.strip()
            assert not re.match(r"(fedsilo|python3?|pytest|mpirun .* fedsilo)\b", command), line


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_relative_links_point_to_files(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_code_cites_the_design_that_exists() -> None:
    assert (REPO / "docs" / "design.md").is_file()
    tracked = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    others = [p for p in tracked if p != "tests/test_docs.py"]
    assert [p for p in others if "DESIGN.md" in (REPO / p).read_text(encoding="utf-8")] == []

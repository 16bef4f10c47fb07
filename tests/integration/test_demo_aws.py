"""``make demo-aws``: README's operator path, run by the same script, must pass end to end.

About 2.5 minutes on two busy cores, most of it the two ``python app.py`` syntheses.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_the_readme_walk_through_passes(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "demo_aws.py"), "--work", str(work)],
        capture_output=True,
        text=True,
        timeout=590,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "walk-through passed" in done.stdout
    assert "✗" not in done.stdout
    commands = (work / "commands.txt").read_text()
    readme = (REPO / "README.md").read_text()
    for line in commands.splitlines():  # every command it ran is shown in README as typed
        command = line.split("] ", 1)[1]
        if command.startswith("fedsilo "):
            shown = _without_values(command)
            assert shown in _without_values_all(readme), command


def _without_values(command: str) -> str:
    """The command's words with ids, ARNs and account numbers left out (they differ)."""
    return " ".join(word for word in command.split() if not _is_value(word))


def _without_values_all(text: str) -> str:
    return "\n".join(_without_values(line.strip()) for line in text.splitlines())


def _is_value(word: str) -> bool:
    return word.startswith(("s3://", "arn:", "site-", "join-request-")) or word.isdigit()

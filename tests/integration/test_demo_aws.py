"""``make demo-aws``: the operator path of docs/operations.md, run by its script, end to end.

Runs ``examples/demo_aws.py`` against moto_server on 127.0.0.1 (the stacks synthesised by
``python app.py`` and created from their templates, IAM enforced), requires it to pass every
step, and checks that each ``fedsilo`` command it ran is shown in docs/operations.md as typed.
Most of its time is the two ``python app.py`` syntheses; the timeout leaves room for a machine
shared with other test suites.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WALK_TIMEOUT_S = 900  # generous: the syntheses slow down several times on a loaded machine

pytestmark = pytest.mark.slow


@pytest.mark.timeout(WALK_TIMEOUT_S + 60)
def test_the_readme_walk_through_passes(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    walk = subprocess.Popen(
        [sys.executable, str(REPO / "examples" / "demo_aws.py"), "--work", str(work)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = walk.communicate(timeout=WALK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        walk.terminate()  # the script stops its moto_server and fedsilo processes on TERM
        output, _ = walk.communicate(timeout=30)
        pytest.fail(f"walk-through still running after {WALK_TIMEOUT_S} s:\n{output[-4000:]}")
    assert walk.returncode == 0, output[-6000:]
    assert "walk-through passed" in output
    assert "✗" not in output
    commands = (work / "commands.txt").read_text()
    readme = (REPO / "docs" / "operations.md").read_text()
    for line in commands.splitlines():  # every command it ran is shown in the docs as typed
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
    placeholders = ("s3://", "arn:", "site-", "join-request-", "<")  # the docs: <ExchangeKeyArn>
    return word.startswith(placeholders) or word.isdigit()

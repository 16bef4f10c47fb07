"""``fedsilo`` run as a user runs it: a separate process, output captured."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

FEDSILO_MODULE = "fedsilo.cli"


def run_fedsilo(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    columns: int = 200,
    timeout_s: float = 600.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m fedsilo.cli *args`` in ``cwd`` to its end; never raises on its exit code.

    Parameters
    ----------
    env
        The environment (``os.environ`` when None); ``COLUMNS`` is set to ``columns`` so rich
        does not wrap a one-line error.
    """
    full = {**(os.environ if env is None else env), "COLUMNS": str(columns)}
    return subprocess.run(
        [sys.executable, "-m", FEDSILO_MODULE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=full,
        check=False,
    )

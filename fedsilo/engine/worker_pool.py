"""How hospital worker processes start: forked from a warm fork server, started early.

``spawn`` re-imports torch (and, on its first optimizer, ``torch._dynamo``) in every worker:
seconds of CPU per worker per run on a 2-core machine. A plain ``fork`` of the aggregator
would inherit its threads (the progress bar's, torch's), which is unsafe; the fork server is
a fresh single-threaded process that imports the worker's modules once and forks workers from
that image. This module imports nothing heavy, so the command line can start the fork server
before the aggregator imports torch and both import on their own cores at once.
"""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing import forkserver
from typing import Any

_WORKER_PRELOAD = ["fedsilo.engine.forkserver_preload"]
"""The fork server's one preload module: what each hospital worker starts with."""


def worker_context() -> Any:
    """The multiprocessing context for hospital workers (its fork server already starting)."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(_WORKER_PRELOAD)
    forkserver.ensure_running()
    return context

"""When the cyclic garbage collector runs in our long-lived processes.

Once torch is loaded a process tracks over a million objects, almost all of them created at
start-up and alive until exit (modules, classes, torch's operator registry). The collector
still walks all of them in every full collection, and CPython 3.11 runs one each time the
tracked population grows by a quarter, so start-up alone spends a large share of its CPU time
collecting nothing (``python -X importtime`` with and without ``gc.disable()`` shows it).

So: no collection while start-up builds those objects, then ``gc.freeze()`` moves everything
alive into the permanent generation, which later collections skip. For the fork server this
is the recipe of the ``gc.freeze`` documentation (disable early in the parent, freeze before
forking, enable in the child), which also keeps the children from dirtying the parent's pages.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def start_up() -> Iterator[None]:
    """Imports and set-up whose objects live as long as the process: not collected, frozen."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def freeze_start_up() -> None:
    """Before a long loop: what exists now (app, model, data) lives until the loop ends."""
    gc.freeze()


def collect_in_child() -> None:
    """First thing in a process forked from the fork server, which runs with collection off."""
    gc.enable()

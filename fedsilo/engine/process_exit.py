"""Leaving a process that has torch loaded without Python's module teardown.

After the last line of a command, CPython clears every module and collects what is left. With
torch, torch._dynamo and pandas loaded that teardown is slow (``python -m bench --only
flower_compare`` times ``fedsilo simulate`` as a whole process beside the same run in
process), paid once by every command that trains or aggregates and once by the hospital
workers' fork server (``tests/fedsilo/engine/test_process_exit.py`` runs both endings).

Nothing the teardown does is needed by us: files are closed by their ``with`` blocks, and the
clean-ups that do matter are registered with ``atexit`` (logging's flush, multiprocessing's
child reaping), which still run, in their usual order, before the standard streams are flushed
and the process leaves with ``os._exit``. The one C-level exit hook we rely on, mpi4py's
``MPI_Finalize``, is called here: without it ``mpirun`` reports the rank as failed. Where a
non-daemon thread is still running, or a profiler or tracer is installed, the normal exit is
used instead.

Either way the helper processes multiprocessing started for this one (the hospitals' fork
server, the resource tracker) are stopped and waited for before it leaves. Left alone they
notice the end of their parent only after it, so a command's process group outlived the
command (``fedsilo simulate``: both still there right after it exited).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import NoReturn


def _flush_standard_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing left to lose
            pass


def _finalise_mpi() -> None:
    """What mpi4py's own exit hook would do, when the program imported it."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        mpi.Finalize()


def _stop_multiprocessing_helpers() -> None:
    """Stop and reap the fork server and resource tracker this process started, if any.

    Only in the process that started them (a fork server inherits the tracker's pipe but is
    not its parent).
    """
    forkserver = sys.modules.get("multiprocessing.forkserver")
    if forkserver is not None and forkserver._forkserver._forkserver_pid is not None:
        # it closes the server's pipe and reaps it, then unlinks its socket, which
        # multiprocessing's own exit handler has already removed with its temporary folder
        with contextlib.suppress(FileNotFoundError):
            forkserver._forkserver._stop()
    tracker = sys.modules.get("multiprocessing.resource_tracker")
    if tracker is not None and tracker._resource_tracker._pid is not None:
        tracker._resource_tracker._stop()


def _leave(code: int) -> NoReturn:
    atexit._run_exitfuncs()  # multiprocessing's among them: pools shut, children joined
    _stop_multiprocessing_helpers()
    _finalise_mpi()
    _flush_standard_streams()
    os._exit(code)


def _other_threads_running() -> bool:
    main = threading.main_thread()
    return any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate())


def _normal_exit_needed() -> bool:
    """A running non-daemon thread (Python waits for it), a call off the main thread, or a
    profiler or tracer (cProfile, coverage, a debugger), which writes its results only after the
    program returns."""
    return (
        _other_threads_running()
        or threading.current_thread() is not threading.main_thread()
        or sys.getprofile() is not None
        or sys.gettrace() is not None
    )


def exit_process(code: int) -> NoReturn:
    """End the process with ``code``: atexit handlers, flushed streams, no module teardown."""
    if _normal_exit_needed():
        atexit.register(_stop_multiprocessing_helpers)
        sys.exit(code)
    _leave(code)


def skip_teardown_at_exit() -> None:
    """Make this process, whenever it exits normally, skip module teardown.

    For a process whose last line is not ours: the multiprocessing fork server, which returns
    from its loop when the aggregator goes away. The handler runs the other atexit handlers
    itself and leaves with status 0, which nobody reads for the fork server.
    """

    def leave() -> None:
        atexit.unregister(leave)
        if not _normal_exit_needed():
            _leave(0)

    atexit.register(leave)

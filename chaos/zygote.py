"""``python -m chaos.zygote``: a fork server for aggregators that are killed 100 times.

A fresh ``fedsilo server run`` spends about 3 CPU-seconds importing torch and pandas before
it does anything; a hundred kills would be mostly imports. This process imports the command
line once, then forks one aggregator per request: each child is a separate OS process that
runs ``fedsilo.cli.main`` with its own arguments, environment, output files and kill rule,
and is SIGKILLed for real. The parent never runs a tensor operation before forking.

Protocol (one JSON object per line on stdin): ``{"argv": [...], "env": {...}, "stdout":
PATH, "stderr": PATH}``; the answer is ``started PID`` then, when it ends, ``exited PID
STATUS`` (STATUS: the exit code, or minus the signal number).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def _child(request: dict[str, Any]) -> None:
    os.environ.update(request["env"])
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(handle, fd)
        os.close(handle)
    from chaos import hooks

    hooks.install()
    from fedsilo.cli import main

    sys.argv = ["fedsilo", *request["argv"]]
    try:
        main()
    finally:
        os._exit(70)  # main() leaves through exit_process; never return into the server loop


def serve() -> None:
    import fedsilo.cli
    import fedsilo.engine.services  # noqa: F401

    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(f"started {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        print(f"exited {pid} {code}", flush=True)


if __name__ == "__main__":
    serve()

"""Separate OS processes for offline federations: started, watched, and killed together.

Every wait polls with a bound, never a fixed sleep; a process that outlives its bound is
killed and the wait fails with the tail of its output.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ProcessWaitError(AssertionError):
    """A process or a wait did not end as the run needs (exited, hung, timed out).

    A fault of the test harness, not an expected fault of fedsilo: it stays with the harness,
    and is an ``AssertionError`` so that pytest reports it as the test's failure.
    """


@dataclass
class Proc:
    """One process with its stdout and stderr in files."""

    name: str
    popen: subprocess.Popen[bytes]
    out: Path
    err: Path
    timeout_s: float = 150.0

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout_s: float | None = None) -> int:
        """Its exit code; killed, and ``ProcessWaitError``, if it runs past the bound."""
        bound = self.timeout_s if timeout_s is None else timeout_s
        try:
            return self.popen.wait(timeout=bound)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ProcessWaitError(
                f"{self.name} did not exit in {bound:.0f} s\n{self.tail()}"
            ) from None

    def kill(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=30)

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines (``--log-format json`` writes them to stdout)."""
        found = []
        for line in self.stdout().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return found

    def tail(self, chars: int = 3000) -> str:
        return (
            f"--- {self.name} rc={self.popen.poll()} stdout ---\n{self.stdout()[-chars:]}\n"
            f"--- {self.name} stderr ---\n{self.stderr()[-chars:]}"
        )


@dataclass
class ProcessGroup:
    """Processes run as ``python -m <module> ...`` in ``cwd``, their output in ``folder``.

    Parameters
    ----------
    timeout_s
        How long ``Proc.wait`` waits for each process by default.
    """

    folder: Path
    module: str
    cwd: Path
    timeout_s: float
    procs: list[Proc] = field(default_factory=list)

    def spawn(self, name: str, args: list[str], env: Mapping[str, str]) -> Proc:
        """Start ``python -m module *args`` in its own session (a group signal misses it)."""
        out = self.folder / f"{name}-{uuid.uuid4().hex[:6]}.out"
        err = out.with_suffix(".err")
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            popen = subprocess.Popen(
                [sys.executable, "-m", self.module, *args],
                stdout=stdout,
                stderr=stderr,
                env=dict(env),
                cwd=self.cwd,
                start_new_session=True,
            )
        proc = Proc(name, popen, out, err, self.timeout_s)
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            proc.kill()

    def logs(self) -> str:
        return "\n".join(proc.tail() for proc in self.procs)

    def wait_for(
        self,
        what: str,
        predicate: Callable[[], Any],
        timeout_s: float,
        poll_s: float,
        watch: Iterable[Proc] = (),
    ) -> Any:
        """Poll ``predicate`` until it is truthy; fail early if a watched process exited."""
        watched = list(watch)
        give_up = time.monotonic() + timeout_s
        while True:
            value = predicate()
            if value:
                return value
            dead = [p for p in watched if not p.alive()]
            if dead:
                raise ProcessWaitError(
                    f"{dead[0].name} exited while waiting for {what}\n{self.logs()}"
                )
            if time.monotonic() > give_up:
                raise ProcessWaitError(
                    f"timed out after {timeout_s:.0f} s waiting for {what}\n{self.logs()}"
                )
            time.sleep(poll_s)

    def run_to_end(self, server: Proc, clients: Mapping[str, Proc]) -> None:
        """Wait for every process; all must exit 0."""
        for proc in [server, *clients.values()]:
            rc = proc.wait()
            if rc != 0:
                raise ProcessWaitError(f"{proc.name} exited {rc}\n{self.logs()}")

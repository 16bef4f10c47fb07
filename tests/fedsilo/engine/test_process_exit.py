"""Leaving without module teardown must not lose output, clean-ups or exit codes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


CANARY = """
import os as _os
canary = open(_os.path.join(_os.environ["OUT"], "canary"), "w")  # noqa: SIM115
canary.write("flushed by teardown")
"""
"""An unclosed, buffered file: module teardown flushes it, ``os._exit`` does not."""


def run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CANARY + textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "OUT": str(tmp_path)},
    )


def test_the_canary_sees_a_normal_teardown(tmp_path):
    done = run_python("", tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "canary").read_text() == "flushed by teardown"


def test_exit_process_keeps_code_output_and_atexit_handlers(tmp_path):
    done = run_python(
        """
        import atexit, os, sys
        from pathlib import Path
        from fedsilo.engine.process_exit import exit_process
        atexit.register(lambda: Path(os.environ["OUT"], "atexit-ran").write_text("yes"))
        sys.stdout.write("buffered line, no newline")
        sys.stderr.write("to stderr")
        exit_process(7)
        """,
        tmp_path,
    )
    assert done.returncode == 7, done.stderr
    assert done.stdout == "buffered line, no newline"
    assert done.stderr == "to stderr"
    assert (tmp_path / "atexit-ran").read_text() == "yes"
    assert (tmp_path / "canary").read_text() == "", "module teardown ran"


def test_exit_process_waits_for_a_running_non_daemon_thread(tmp_path):
    done = run_python(
        """
        import os, threading, time
        from pathlib import Path
        from fedsilo.engine.process_exit import exit_process
        def late_write():
            time.sleep(1)
            Path(os.environ["OUT"], "thread-finished").write_text("yes")
        threading.Thread(target=late_write).start()
        exit_process(3)
        """,
        tmp_path,
    )
    assert done.returncode == 3, done.stderr
    assert (tmp_path / "thread-finished").read_text() == "yes"


def test_skip_teardown_at_exit_runs_earlier_handlers_and_leaves_with_0(tmp_path):
    done = run_python(
        """
        import atexit, os
        from pathlib import Path
        atexit.register(lambda: Path(os.environ["OUT"], "earlier-handler").write_text("yes"))
        from fedsilo.engine.process_exit import skip_teardown_at_exit
        skip_teardown_at_exit()
        print("still printed", end="")
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "still printed"
    assert (tmp_path / "earlier-handler").read_text() == "yes"
    assert (tmp_path / "canary").read_text() == "", "module teardown ran"


def test_a_profiled_command_still_writes_its_profile(tmp_path):
    """cProfile writes its file after the program returns, so the exit must stay normal."""
    profile = tmp_path / "cli.prof"
    done = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "fedsilo.cli", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert profile.stat().st_size > 0


def test_the_fork_server_preload_freezes_its_imports_and_skips_teardown(tmp_path):
    done = run_python(
        """
        import gc
        import fedsilo.engine.forkserver_preload
        assert not gc.isenabled(), "the fork server runs without collection"
        assert gc.get_freeze_count() > 100_000, gc.get_freeze_count()
        import torch._dynamo, pandas  # already loaded: the workers start with them
        print("ok", end="")
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok"
    assert (tmp_path / "canary").read_text() == "", "module teardown ran"


def _group_members(pgid: int) -> list[str]:
    """Live processes of process group ``pgid`` (zombies excluded), as their command lines."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # it ended while we looked
            continue
        state, _ppid, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            members.append(command[:120])
    return members


def _run_in_own_group(command: list[str], tmp_path: Path) -> tuple[int, list[str], str]:
    started = subprocess.Popen(
        command,
        cwd=tmp_path,
        start_new_session=True,  # its own process group, led by its pid
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, stderr = started.communicate(timeout=600)
    return started.returncode, _group_members(started.pid), stderr


def test_simulate_leaves_no_process_behind(tmp_path):
    """Its fork server and resource tracker do not outlive it, not even by a moment (still in
    its process group right after it exited)."""
    fedsilo = Path(sys.executable).with_name("fedsilo")
    command = [str(fedsilo), "simulate", "--hospitals", "3", "--rounds", "1", "--out", "run"]
    status, left, stderr = _run_in_own_group(command, tmp_path)
    assert status == 0, stderr[-2000:]
    assert left == [], "processes outlived the command"

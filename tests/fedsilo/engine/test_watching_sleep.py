"""The simulation's sleep notices failed hospital workers, and costs nothing when they answer."""

import queue
from dataclasses import dataclass
from typing import Any

import pytest

from fedsilo.engine.process_engine import _watching_sleep
from fedsilo.engine.round_signal import ANSWERED
from fl_core.errors import FedsiloError


@dataclass
class _Exited:
    """What the sleep reads of a worker process: its name and exit code."""

    name: str
    exitcode: int | None


def _sleep(*procs: _Exited) -> tuple[Any, "queue.Queue[Any]"]:
    reports: queue.Queue[Any] = queue.Queue()
    return _watching_sleep(procs, reports), reports  # type: ignore[arg-type]


def test_every_worker_exited_and_one_crashed_stops_the_federation_with_their_codes() -> None:
    sleep, _ = _sleep(_Exited("fedsilo-hospitals-0", -9), _Exited("fedsilo-hospitals-1", 0))
    with pytest.raises(FedsiloError, match=r"every hospital worker has exited .*-9"):
        sleep(0.01)


def test_a_worker_still_running_keeps_the_federation_waiting() -> None:
    sleep, _ = _sleep(_Exited("fedsilo-hospitals-0", 1), _Exited("fedsilo-hospitals-1", None))
    sleep(0.01)  # its deadline, not this sleep, decides what happens to the round


def test_an_error_report_stops_at_once_and_says_which_worker() -> None:
    sleep, reports = _sleep(_Exited("fedsilo-hospitals-0", None))
    reports.put(("error", 0, "site_007: data folder unreadable"))
    with pytest.raises(FedsiloError, match="hospital worker 0 failed: site_007"):
        sleep(5)


def test_an_answer_ends_the_sleep_early_and_the_exits_are_checked_on_the_next_quiet_sleep() -> None:
    sleep, reports = _sleep(_Exited("fedsilo-hospitals-0", 3))
    reports.put((ANSWERED, 0, 4))
    sleep(5)  # returns at once: an answer just came
    with pytest.raises(FedsiloError, match="fedsilo-hospitals-0: 3"):
        sleep(0.01)

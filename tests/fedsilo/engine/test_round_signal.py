"""The simulation's wake-ups: early returns from a poll's sleep, never a missed round."""

from __future__ import annotations

import multiprocessing as mp
import queue
import time

from fedsilo.engine.round_signal import ANSWERED, RoundSignal, WorkerNotifier


def _wait_then_report(signal: RoundSignal, round_index: int, done: mp.Queue) -> None:
    started = time.monotonic()
    signal.wait_published(round_index, 60)
    done.put(time.monotonic() - started)


def test_already_published_round_returns_at_once():
    signal = RoundSignal(mp.get_context("fork"))
    signal.publish(3)
    started = time.monotonic()
    signal.wait_published(2, 60)
    signal.wait_published(3, 60)
    assert time.monotonic() - started < 5


def test_an_unpublished_round_sleeps_the_full_interval():
    signal = RoundSignal(mp.get_context("fork"))
    signal.publish(1)
    started = time.monotonic()
    signal.wait_published(2, 0.2)
    assert time.monotonic() - started >= 0.2


def test_publish_wakes_a_worker_in_another_process_long_before_its_timeout():
    context = mp.get_context("forkserver")
    signal = RoundSignal(context)
    done = context.Queue()
    worker = context.Process(target=_wait_then_report, args=(signal, 2, done))
    worker.start()
    try:
        signal.publish(1)  # not the round it waits for: it keeps sleeping
        try:
            done.get(timeout=1)
            raise AssertionError("woke for the wrong round")
        except queue.Empty:
            pass
        signal.publish(2)
        assert done.get(timeout=30) < 30  # woken, not timed out after 60 s
    finally:
        worker.join(timeout=30)
    assert worker.exitcode == 0


def test_notifier_tells_the_aggregator_which_round_was_answered():
    reports: queue.Queue = queue.Queue()
    notifier = WorkerNotifier(RoundSignal(mp.get_context("fork")), reports, worker=1)
    notifier.answered(7)
    assert reports.get_nowait() == (ANSWERED, 1, 7)

"""Admission checks run ahead on threads: results in key order, errors at their key, bounded."""

import threading
import time

import pytest

from fl_server.lookahead import (
    THREADED_MIN_UPDATE_BYTES,
    checked_ahead,
    default_workers,
    workers_for,
)


def test_results_come_in_key_order_whatever_order_the_threads_finish_in():
    def check(key: int) -> int:
        time.sleep(0.002 * (key % 3))  # later keys often finish first
        return key * key

    keys = list(range(12))
    taken = [(key, result()) for key, result in checked_ahead(check, keys, workers=3)]
    assert taken == [(key, key * key) for key in keys]


def test_a_checks_error_is_raised_when_its_key_is_taken_not_before():
    def check(key: str) -> str:
        if key == "bad":
            raise ValueError("rejected")
        return key

    seen = []
    for _key, result in checked_ahead(check, ["a", "bad", "c"], workers=2):
        try:
            seen.append(result())
        except ValueError:
            seen.append("rejected")
    assert seen == ["a", "rejected", "c"]


def test_at_most_ahead_plus_one_checks_are_started_beyond_the_taken_ones():
    started: list[int] = []
    lock = threading.Lock()

    def check(key: int) -> int:
        with lock:
            started.append(key)
        return key

    keys = list(range(20))
    for taken, (key, result) in enumerate(checked_ahead(check, keys, workers=2, ahead=2), 1):
        assert result() == key
        time.sleep(0.005)  # let the workers run as far as they may
        with lock:
            assert len(started) <= taken + 2


def test_leaving_early_cancels_the_rest_and_leaves_no_thread():
    calls: list[int] = []

    def check(key: int) -> int:
        calls.append(key)
        time.sleep(0.01)
        return key

    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(RuntimeError):
        for key, result in checked_ahead(check, list(range(50)), workers=2, ahead=2):
            result()
            if key == 1:
                raise RuntimeError("the caller failed")
    assert len(calls) <= 5
    left = [t for t in threading.enumerate() if t.ident not in before]
    assert not [t for t in left if t.name.startswith("fedsilo-check")]


def test_no_keys_no_threads_and_bad_sizes_refused():
    assert list(checked_ahead(lambda k: k, [])) == []
    with pytest.raises(ValueError):
        list(checked_ahead(lambda k: k, [1], workers=-1))
    with pytest.raises(ValueError):
        list(checked_ahead(lambda k: k, [1], workers=2, ahead=0))


def test_inline_checks_in_the_callers_thread_in_order_and_raises_at_the_result():
    caller = threading.get_ident()
    ran: list[tuple[str, int]] = []

    def check(key: str) -> str:
        ran.append((key, threading.get_ident()))
        if key == "bad":
            raise ValueError(key)
        return key.upper()

    taken = []
    for key, result in checked_ahead(check, ["a", "bad", "c"], workers=0):
        assert [k for k, _ in ran] == taken  # nothing is checked before its result is taken
        try:
            taken.append(key)
            assert result() == key.upper()
        except ValueError:
            assert key == "bad"
    assert ran == [("a", caller), ("bad", caller), ("c", caller)]


def test_small_updates_are_checked_inline_large_ones_on_threads():
    assert workers_for(THREADED_MIN_UPDATE_BYTES - 1) == 0
    assert workers_for(THREADED_MIN_UPDATE_BYTES) == default_workers() >= 1


def test_checks_that_hash_get_every_core_and_checks_that_do_not_leave_one_to_the_sum(
    monkeypatch,
):
    from fl_server import lookahead

    for cores, hashed, unhashed in ((1, 1, 1), (2, 2, 1), (4, 4, 3), (16, 4, 3)):
        monkeypatch.setattr(lookahead.os, "cpu_count", lambda cores=cores: cores)
        assert workers_for(THREADED_MIN_UPDATE_BYTES, hashed=True) == hashed
        assert workers_for(THREADED_MIN_UPDATE_BYTES, hashed=False) == unhashed
        assert workers_for(THREADED_MIN_UPDATE_BYTES - 1, hashed=False) == 0

"""The shared interleaving helper runs contenders in rotated order and summarises them right."""

from __future__ import annotations

from functools import partial

import pytest

from bench._timing import Spread, interleave, rotated, spread_cells, timed


def test_contenders_run_interleaved_in_rotated_order() -> None:
    ran: list[str] = []

    def contender(name: str) -> float:
        ran.append(name)
        return float(len(ran))

    results = interleave({name: partial(contender, name) for name in "abc"}, repeats=3)

    assert ran == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert results == {"a": [1.0, 6.0, 8.0], "b": [2.0, 4.0, 9.0], "c": [3.0, 5.0, 7.0]}
    assert list(results) == ["a", "b", "c"]  # the given order, whatever ran first


def test_rotation_cycles_and_tolerates_one_or_no_contender() -> None:
    assert [rotated(["a", "b", "c"], by) for by in range(4)] == [
        ["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]
    ]  # fmt: skip
    assert rotated(["a"], 5) == ["a"] and rotated([], 2) == []


def test_interleave_refuses_zero_repeats() -> None:
    with pytest.raises(ValueError, match="at least once"):
        interleave({"a": lambda: 1.0}, repeats=0)


def test_min_median_and_ratio_of_medians() -> None:
    odd = Spread.of([3.0, 1.0, 2.0])
    even = Spread.of([4.0, 1.0, 3.0, 2.0])
    assert (odd.min, odd.median, odd.runs) == (1.0, 2.0, 3)
    assert (even.min, even.median, even.runs) == (1.0, 2.5, 4)
    assert even.over(odd) == pytest.approx(1.25)
    assert spread_cells([3.0, 1.0, 2.0], [4.0, 1.0, 3.0, 2.0], ".1f") == ["1.0", "2.0", "0.80"]


def test_spread_of_nothing_fails_loudly() -> None:
    with pytest.raises(ValueError, match="never measured"):
        Spread.of([])
    with pytest.raises(ValueError, match="must be > 0"):
        Spread.of([1.0]).over(Spread.of([0.0]))


def test_timed_returns_the_seconds_of_the_work() -> None:
    calls: list[int] = []
    seconds = timed(lambda: calls.append(1))()
    assert calls == [1] and 0 <= seconds < 1

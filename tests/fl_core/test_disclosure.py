"""The disclosure floor's rules at their boundaries (k - 1 withheld, k disclosed)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fl_core.disclosure import (
    DisclosureFloor,
    Suppression,
    below_floor,
    check_floor,
)

FLOOR = DisclosureFloor(min_stays=11, min_events=5)


@pytest.mark.parametrize(
    ("stays", "events", "expected"),
    [
        (10, 5, "min_stays"),
        (11, 5, None),
        (11, 4, "min_events"),
        (10, 4, "min_stays"),  # too small both ways: named for its size
        (11, None, None),
        (10, None, "min_stays"),
        (0, 0, "min_stays"),
    ],
)
def test_below_floor_at_the_boundary(stays: int, events: int | None, expected: str | None) -> None:
    assert below_floor(FLOOR, stays, events) == expected


def test_check_floor_names_the_output_and_the_floor_value() -> None:
    assert check_floor(FLOOR, "evaluation", 10, 9) == Suppression(
        path="evaluation", rule="min_stays", floor=11
    )
    assert check_floor(FLOOR, "evaluation", 12, 4) == Suppression(
        path="evaluation", rule="min_events", floor=5
    )
    assert check_floor(FLOOR, "evaluation", 11, 5) is None


def test_no_floor_discloses_everything() -> None:
    assert check_floor(None, "evaluation", 0, 0) is None


@pytest.mark.parametrize("field", ["min_stays", "min_events"])
@pytest.mark.parametrize("value", [0, -1])
def test_floor_must_be_at_least_one(field: str, value: int) -> None:
    with pytest.raises(ValidationError, match=field):
        DisclosureFloor.model_validate({"min_stays": 5, "min_events": 5, field: value})


def test_floor_forbids_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="min_deaths"):
        DisclosureFloor.model_validate({"min_stays": 5, "min_events": 5, "min_deaths": 1})


@pytest.mark.parametrize("path", ["", "evaluation\x1b[31m", "a\nb", "x" * 201])
def test_suppression_refuses_hostile_paths(path: str) -> None:
    with pytest.raises(ValidationError):
        Suppression(path=path, rule="min_stays", floor=1)


def test_suppression_refuses_unknown_rules_and_zero_floors() -> None:
    with pytest.raises(ValidationError):
        Suppression.model_validate({"path": "evaluation", "rule": "min_age", "floor": 3})
    with pytest.raises(ValidationError):
        Suppression(path="evaluation", rule="min_stays", floor=0)

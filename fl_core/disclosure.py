"""The disclosure floor: which of a hospital's aggregates may leave it in the clear.

A count, metric, histogram or feature moment computed on a handful of stays can single out
patients (a test split of three stays with one death gives that death's predicted risk away in
its histogram bin). A hospital's site policy sets a floor; anything measured on fewer stays, or
on fewer events of the positive class, does not leave in the clear. What is held back is named
(``Suppression``) so the federation can say what is missing and why, instead of silently
reporting a smaller cohort.

Pure rules on counts only: the walk over a hospital's answer is ``fl_client.disclosure``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FloorRule = Literal["min_stays", "min_events"]
"""``min_stays``: too few stays measured; ``min_events``: too few of the positive class."""

DisclosedAs = Literal["withheld", "masked_sum"]
"""``withheld``: it never left the hospital; ``masked_sum``: it left only inside the secure
aggregation sum, so the aggregator learns it added into the other hospitals' values."""

MAX_SUPPRESSIONS = 256
"""Far above what an honest answer names (its evaluation parts and moments features)."""


class DisclosureFloor(BaseModel):
    """The smallest cohort a hospital lets an aggregate describe in the clear."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_stays: int = Field(ge=1, description="stays an aggregate must be computed on")
    min_events: int = Field(
        ge=1, description="positive-class events (deaths) a split must hold for its metrics"
    )


class Suppression(BaseModel):
    """One output a hospital did not disclose in the clear, and the floor that stopped it.

    Hospital-written: the aggregator only counts and shows these, never acts on them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="the output held back: evaluation, evaluation.reference.<name>, "
        "train_loss, moments.<feature>, moments",
    )
    rule: FloorRule
    floor: int = Field(ge=1, description="the floor's value for that rule")
    disclosed_as: DisclosedAs = "withheld"


def below_floor(floor: DisclosureFloor, stays: int, events: int | None = None) -> FloorRule | None:
    """The rule an aggregate over ``stays`` stays (``events`` of them positive) breaks.

    ``events`` None: the aggregate does not depend on the outcome (a feature's moments), so
    only the stays rule applies. Stays are checked first: a split too small in both ways is
    named for its size.
    """
    if stays < floor.min_stays:
        return "min_stays"
    if events is not None and events < floor.min_events:
        return "min_events"
    return None


def suppression(
    path: str, rule: FloorRule, floor: DisclosureFloor, disclosed_as: DisclosedAs = "withheld"
) -> Suppression:
    """The named record of ``path`` held back by ``rule``, with the floor's value."""
    value = floor.min_stays if rule == "min_stays" else floor.min_events
    return Suppression(path=path, rule=rule, floor=value, disclosed_as=disclosed_as)


def check_floor(
    floor: DisclosureFloor | None, path: str, stays: int, events: int | None = None
) -> Suppression | None:
    """``path``'s suppression when its aggregate is below ``floor``; None when it may leave
    (or there is no floor: a hospital without a site policy withholds nothing)."""
    if floor is None:
        return None
    rule = below_floor(floor, stays, events)
    return None if rule is None else suppression(path, rule, floor)


def withheld_evaluation_rule(suppressed: Sequence[Suppression]) -> FloorRule | None:
    """The rule under which an answer says it withheld its whole evaluation, if it does
    (an evaluation moved into the masked sum was not withheld: it counts)."""
    return next(
        (s.rule for s in suppressed if s.path == "evaluation" and s.disclosed_as == "withheld"),
        None,
    )

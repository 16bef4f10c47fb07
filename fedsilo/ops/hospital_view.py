"""Does joining the federation pay for each hospital? Its own stays, federated vs alone.

A pooled AUROC can rise while some hospitals are served worse than by a model of their own.
The view compares, hospital by hospital on its own held-out stays, the federated model with a
model trained on that hospital's rows alone. The figure is the Brier score (squared error of
the predicted risk): unlike a per-hospital AUROC it exists for a hospital whose few test stays
are all survivors, which on the eICU demo is most of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

WORST_SHARE = 0.1
"""The worst decile: the tenth of hospitals that the federation serves worst against alone."""


@dataclass(frozen=True)
class HospitalComparison:
    """Federated vs local-only Brier score over the hospitals of one fold."""

    hospitals: int
    share_better: float
    """Share of hospitals whose own stays the federated model predicts better (lower Brier)."""
    with_deaths: int
    share_better_with_deaths: float | None
    """The same over the hospitals with a death among those stays: a model of a hospital's own
    that predicts no risk at all wins wherever no one died, and loses only here."""
    worst_decile_federated_brier: float
    worst_decile_local_brier: float
    """Mean Brier of the two models over the worst decile (the largest federated - local)."""


def brier(risk: npt.NDArray[np.float64], labels: npt.NDArray[np.int8]) -> float:
    return float(np.mean((np.asarray(risk, np.float64) - labels) ** 2))


def compare_hospitals(
    federated: Mapping[str, npt.NDArray[np.float64]],
    local_only: Mapping[str, npt.NDArray[np.float64]],
    labels: Mapping[str, npt.NDArray[np.int8]],
) -> HospitalComparison | None:
    """The view over the hospitals that have both predictions; None when there is none."""
    sites = sorted(set(federated) & set(local_only) & set(labels))
    sites = [s for s in sites if labels[s].size]
    if not sites:
        return None
    fed = np.array([brier(federated[s], labels[s]) for s in sites])
    alone = np.array([brier(local_only[s], labels[s]) for s in sites])
    worst = np.argsort(alone - fed, kind="stable")[: max(1, math.ceil(WORST_SHARE * len(sites)))]
    died = np.array([bool(labels[s].any()) for s in sites])
    return HospitalComparison(
        hospitals=len(sites),
        share_better=float(np.mean(fed < alone)),
        with_deaths=int(died.sum()),
        share_better_with_deaths=float(np.mean((fed < alone)[died])) if died.any() else None,
        worst_decile_federated_brier=float(fed[worst].mean()),
        worst_decile_local_brier=float(alone[worst].mean()),
    )

"""The statistics behind the report's per-hospital and calibration figures.

Every figure comes from a hospital's test histogram (counts of survivors and deaths per risk
bin), never from a per-patient prediction. A hospital with a handful of stays has an AUROC of
0 or 1 by chance, so a hospital's discrimination is shown only where its test split has
``MIN_CLASS_STAYS`` deaths and as many survivors, and always with an interval; the figure
every hospital has is observed against expected deaths (the sum of predicted risks), drawn
as a funnel plot (Spiegelhalter, Statistics in Medicine 2005) whose control limits widen as a
hospital's expected deaths shrink.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from fl_core.metrics import ClassHistogram, auroc_from_histogram, bin_centers

MIN_CLASS_STAYS = 5
"""A hospital's AUROC is shown only with at least this many deaths and as many survivors: with
fewer its 95% interval spans most of 0.5-1 and one stay moves it by a tenth."""

FUNNEL_LEVELS = (0.95, 0.998)
"""The funnel plot's control limits: about two and three standard deviations."""


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class SiteFigures:
    """One hospital's test split under the final global model."""

    site_id: str
    stays: int
    deaths: int
    expected_deaths: float
    """Sum of the predicted risks (bin centres) over the hospital's test stays."""
    observed_expected: Interval | None
    """Observed / expected deaths with its exact Poisson 95% interval; None when nothing is
    expected (no test stay)."""
    auroc: Interval | None
    """AUROC with its Hanley-McNeil 95% interval; None when not evaluable."""

    @property
    def survivors(self) -> int:
        return self.stays - self.deaths

    @property
    def evaluable(self) -> bool:
        return self.auroc is not None

    def not_evaluable_reason(self) -> str:
        """Why no AUROC is shown, in the words the table prints."""
        return (
            f"not evaluable: {self.deaths} death(s), {self.survivors} survivor(s) "
            f"(needs {MIN_CLASS_STAYS} of each)"
        )


def expected_deaths(histogram: ClassHistogram) -> float:
    counts = (histogram.positives + histogram.negatives).astype(np.float64)
    return float((counts * bin_centers(counts.size)).sum())


def auroc_interval(auroc: float, deaths: int, survivors: int, level: float = 0.95) -> Interval:
    """Hanley and McNeil's (1982) standard error of an AUROC, as a normal interval in [0, 1]."""
    q1 = auroc / (2 - auroc)
    q2 = 2 * auroc**2 / (1 + auroc)
    variance = (
        auroc * (1 - auroc) + (deaths - 1) * (q1 - auroc**2) + (survivors - 1) * (q2 - auroc**2)
    ) / (deaths * survivors)
    half = float(stats.norm.ppf(0.5 + level / 2)) * float(np.sqrt(max(variance, 0.0)))
    return Interval(auroc, max(0.0, auroc - half), min(1.0, auroc + half))


def ratio_interval(observed: int, expected: float, level: float = 0.95) -> Interval:
    """Observed / expected with the exact (Garwood) Poisson interval of the observed count."""
    tail = (1 - level) / 2
    low = 0.0 if observed == 0 else float(stats.chi2.ppf(tail, 2 * observed)) / 2
    high = float(stats.chi2.ppf(1 - tail, 2 * (observed + 1))) / 2
    return Interval(observed / expected, low / expected, high / expected)


def site_figures(site_id: str, histogram: ClassHistogram) -> SiteFigures:
    deaths = int(histogram.positives.sum())
    stays = deaths + int(histogram.negatives.sum())
    expected = expected_deaths(histogram)
    auroc = None
    if min(deaths, stays - deaths) >= MIN_CLASS_STAYS:
        value = auroc_from_histogram(histogram)
        auroc = None if value is None else auroc_interval(value, deaths, stays - deaths)
    return SiteFigures(
        site_id=site_id,
        stays=stays,
        deaths=deaths,
        expected_deaths=expected,
        observed_expected=ratio_interval(deaths, expected) if expected > 0 else None,
        auroc=auroc,
    )


def funnel_limits(
    expected: npt.NDArray[np.float64], level: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Lower and upper control limits of observed / expected at each expected count.

    The exact Poisson limits with the count taken as continuous (the chi-square form of
    Garwood's interval), so the funnel is a smooth curve that widens without bound as the
    expected deaths fall, instead of the steps of integer quantiles.
    """
    tail = (1 - level) / 2
    lower = stats.chi2.ppf(tail, 2 * expected) / 2
    upper = stats.chi2.ppf(1 - tail, 2 * (expected + 1)) / 2
    return np.asarray(lower / expected, np.float64), np.asarray(upper / expected, np.float64)


def outside_limits(observed: int, expected: float, level: float) -> bool:
    """Whether an observed count lies beyond the funnel's limits, by the exact Poisson tails.

    The count is discrete: no death where 0.5 were expected is as likely as not, so it is
    judged by P(O <= observed) and P(O >= observed), not by the drawn continuous curves.
    """
    tail = (1 - level) / 2
    below = float(stats.poisson.cdf(observed, expected)) < tail
    above = float(stats.poisson.sf(observed - 1, expected)) < tail
    return below or above


def wilson_interval(positives: int, total: int, level: float = 0.95) -> Interval:
    """The Wilson score interval of a proportion: sensible at 0 and 1 and on small counts."""
    if total == 0:
        return Interval(float("nan"), 0.0, 1.0)
    z = float(stats.norm.ppf(0.5 + level / 2))
    share = positives / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = (
        z * np.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    )
    low = 0.0 if positives == 0 else max(0.0, centre - float(half))
    high = 1.0 if positives == total else min(1.0, centre + float(half))
    return Interval(share, low, high)


@dataclass(frozen=True)
class CalibrationGroup:
    predicted: float
    """Mean predicted risk of the group's stays (bin centres)."""
    observed: Interval
    """Observed death rate with its Wilson 95% interval."""
    stays: int
    deaths: int


def calibration_groups(
    positives: npt.NDArray[np.int64], negatives: npt.NDArray[np.int64], groups: int
) -> list[CalibrationGroup]:
    """Adjacent risk bins merged into about ``groups`` groups of equal size (by stays).

    Each point then rests on enough stays to mean something; the predicted risk of a bin is
    its centre.
    """
    counts = positives + negatives
    total = int(counts.sum())
    if total == 0:
        return []
    centers = bin_centers(counts.size)
    group_of_bin = np.minimum((np.cumsum(counts) - counts) * groups // total, groups - 1)
    found = []
    for group in range(groups):
        members = (group_of_bin == group) & (counts > 0)
        size = int(counts[members].sum())
        if size == 0:
            continue
        deaths = int(positives[members].sum())
        found.append(
            CalibrationGroup(
                predicted=float((centers[members] * counts[members]).sum() / size),
                observed=wilson_interval(deaths, size),
                stays=size,
                deaths=deaths,
            )
        )
    return found

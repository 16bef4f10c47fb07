"""Does joining pay for each hospital? Out-of-fold losses per hospital, with intervals.

A hospital of the eICU demo has ~11 stays and one death or none; one fold's test stays say
nothing about it, and a model of its own trained on eight survivors that predicts no risk wins
any comparison on stays without a death by construction. So the verdict is taken over all of
a hospital's stays across the folds of a cross-validation (``fedsilo.ops.evaluate`` keeps
every stay's out-of-fold risks), and only where it can mean something:

- per hospital, the log-loss and Brier score of the federated model, of the hospital's own
  model (``local_only``) and, where known, of APACHE IVa, over the same stays;
- the mean per-stay difference federated - own with its 95% t interval: the federated model
  is *not worse* for the hospital where that interval reaches 0 or below;
- a hospital with fewer than ``MIN_VERDICT_EVENTS`` deaths or survivors over its stays is
  *not evaluable*: listed, never counted as a loss. The report's rule for a hospital's AUROC
  (``report_stats.MIN_CLASS_STAYS``, 5 of each) would leave no hospital of the demo (4 deaths
  at most); a loss exists with fewer, and its interval says how little it then decides;
- observed against expected deaths of the federated model per hospital, for the report's
  funnel plot (``report_figures.funnel_figure``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq
from scipy import stats

from fedsilo.ops.report_stats import Interval, SiteFigures, site_figures
from fl_core.metrics import ClassHistogram

RISK_FLOOR = 1e-6
"""Risks are clipped to [RISK_FLOOR, 1 - RISK_FLOOR] for the log-loss: a model that says 0
for a stay that died costs 13.8 nats, not infinity."""

LEVEL = 0.95

MIN_VERDICT_EVENTS = 2
"""Deaths (and survivors) a hospital needs for a verdict: with none, a model of its own that
predicts no risk wins by construction; with one, that single stay decides the comparison."""


@dataclass(frozen=True)
class ModelLosses:
    log_loss: float
    brier: float


@dataclass(frozen=True)
class HospitalVerdict:
    """One hospital's out-of-fold stays, federated against its own model (and APACHE)."""

    site_id: str
    stays: int
    deaths: int
    federated: ModelLosses
    own: ModelLosses | None
    """None where the hospital never had a model of its own (no training rows in any fold)."""
    apache: ModelLosses | None
    """Over the stays with an APACHE IVa prediction; None where it has none."""
    log_loss_difference: Interval | None
    """Federated - own, mean per stay, with its 95% interval; None where not evaluable."""
    brier_difference: Interval | None

    @property
    def survivors(self) -> int:
        return self.stays - self.deaths

    @property
    def evaluable(self) -> bool:
        return self.own is not None and min(self.deaths, self.survivors) >= MIN_VERDICT_EVENTS

    @property
    def not_worse(self) -> bool | None:
        """The federated model is at least as good, within the interval (log-loss)."""
        if self.log_loss_difference is None:
            return None
        return self.log_loss_difference.low <= 0.0

    def not_evaluable_reason(self) -> str:
        if self.own is None:
            return "not evaluable: no model of its own (no training rows)"
        return (
            f"not evaluable: {self.deaths} death(s), {self.survivors} survivor(s) "
            f"(needs {MIN_VERDICT_EVENTS} of each)"
        )


@dataclass(frozen=True)
class VerdictSummary:
    hospitals: list[HospitalVerdict]
    funnel: list[SiteFigures]
    """The federated model's observed/expected deaths per hospital, out of fold."""

    @property
    def evaluable(self) -> list[HospitalVerdict]:
        return [h for h in self.hospitals if h.evaluable]

    @property
    def not_worse_share(self) -> float | None:
        """Share of evaluable hospitals for which joining is not worse (log-loss)."""
        judged = self.evaluable
        if not judged:
            return None
        return sum(bool(h.not_worse) for h in judged) / len(judged)

    @property
    def brier_not_worse_share(self) -> float | None:
        judged = [h for h in self.evaluable if h.brier_difference is not None]
        if not judged:
            return None
        return sum(h.brier_difference.low <= 0.0 for h in judged if h.brier_difference) / len(
            judged
        )


def _log_loss(
    risk: npt.NDArray[np.float64], labels: npt.NDArray[np.int8]
) -> npt.NDArray[np.float64]:
    clipped = np.clip(risk, RISK_FLOOR, 1 - RISK_FLOOR)
    return np.asarray(-(labels * np.log(clipped) + (1 - labels) * np.log1p(-clipped)), np.float64)


def _brier(risk: npt.NDArray[np.float64], labels: npt.NDArray[np.int8]) -> npt.NDArray[np.float64]:
    return np.asarray((risk - labels) ** 2, np.float64)


def _losses(risk: npt.NDArray[np.float64], labels: npt.NDArray[np.int8]) -> ModelLosses:
    return ModelLosses(
        log_loss=float(_log_loss(risk, labels).mean()), brier=float(_brier(risk, labels).mean())
    )


def mean_interval(differences: npt.NDArray[np.float64], level: float = LEVEL) -> Interval:
    """Mean of paired per-stay differences with its t interval."""
    mean = float(differences.mean())
    if differences.size < 2:
        return Interval(mean, -math.inf, math.inf)
    half = float(stats.t.ppf(0.5 + level / 2, differences.size - 1)) * float(
        differences.std(ddof=1) / math.sqrt(differences.size)
    )
    return Interval(mean, mean - half, mean + half)


def hospital_verdict(
    site_id: str,
    labels: npt.NDArray[np.int8],
    federated: npt.NDArray[np.float64],
    own: npt.NDArray[np.float64],
    apache: npt.NDArray[np.float64] | None,
) -> HospitalVerdict:
    """One hospital's verdict; ``own`` is NaN on stays no model of its own predicted."""
    labels = np.asarray(labels, np.int8)
    deaths = int(labels.sum())
    known_apache = None if apache is None else ~np.isnan(apache)
    apache_losses = (
        None
        if apache is None or known_apache is None or not known_apache.any()
        else _losses(apache[known_apache], labels[known_apache])
    )
    paired = ~np.isnan(own)
    own_losses = _losses(own[paired], labels[paired]) if paired.any() else None
    verdict = HospitalVerdict(
        site_id=site_id,
        stays=int(labels.size),
        deaths=deaths,
        federated=_losses(federated, labels),
        own=own_losses,
        apache=apache_losses,
        log_loss_difference=None,
        brier_difference=None,
    )
    if not verdict.evaluable:
        return verdict
    y = labels[paired]
    return HospitalVerdict(
        site_id=site_id,
        stays=verdict.stays,
        deaths=deaths,
        federated=verdict.federated,
        own=own_losses,
        apache=apache_losses,
        log_loss_difference=mean_interval(
            _log_loss(federated[paired], y) - _log_loss(own[paired], y)
        ),
        brier_difference=mean_interval(_brier(federated[paired], y) - _brier(own[paired], y)),
    )


def verdict_from_stays(
    sites: Sequence[str],
    labels: npt.NDArray[np.int8],
    federated: npt.NDArray[np.float64],
    own: npt.NDArray[np.float64],
    apache: npt.NDArray[np.float64] | None,
    num_bins: int,
) -> VerdictSummary:
    """Every hospital's verdict and funnel figures from per-stay arrays of one deal."""
    site_array = np.asarray(sites)
    verdicts, funnel = [], []
    for site in sorted(set(site_array.tolist())):
        rows = site_array == site
        verdicts.append(
            hospital_verdict(
                site,
                labels[rows],
                federated[rows],
                own[rows],
                None if apache is None else apache[rows],
            )
        )
        histogram = ClassHistogram.from_scores(federated[rows], labels[rows], num_bins)
        funnel.append(site_figures(site, histogram))
    return VerdictSummary(verdicts, funnel)


def verdict_from_file(path: Path, num_bins: int, repeat: int = 0) -> VerdictSummary | None:
    """The verdict of one deal (``repeat``) from ``evaluate.STAYS_FILE``; None without the
    hospitals' own models (``--no-local-only``)."""
    table = pq.read_table(path).to_pandas()
    table = table[table["repeat"] == repeat]
    if "local_only" not in table.columns or table.empty:
        return None
    return verdict_from_stays(
        table["site"].to_numpy(str),
        table["label"].to_numpy(np.int8),
        table["federated"].to_numpy(np.float64),
        table["local_only"].to_numpy(np.float64),
        table["apache"].to_numpy(np.float64) if "apache" in table.columns else None,
        num_bins,
    )

"""Built-in synthetic ICU data: hospitals that differ in size, case mix and risk (non-IID).

Each hospital is generated from its own seed, so a worker can build just the hospitals it
hosts. The true risk of every stay is known and exported as the ``bayes`` reference score;
an ``apache`` score plays the role of a good but imperfect clinical severity score.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fl_core.data.base import DataSource, SiteData, Split
from fl_core.errors import ConfigError
from fl_core.types import SiteId

FEATURES: tuple[str, ...] = (
    "age",
    "male",
    "admit_emergency",
    "admit_operating_room",
    "admit_floor",
    "unit_micu",
    "unit_sicu",
    "unit_ccu",
    "heart_rate",
    "mean_bp",
    "respiratory_rate",
    "temperature",
    "wbc",
    "creatinine",
    "sodium",
    "gcs",
    "ventilated",
    "lactate",
    "lactate_missing",
    "wbc_missing",
)
_INTERCEPT = -3.95
_SPLIT_FRACTIONS = (0.7, 0.1, 0.2)


def _sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


def _hospital_size(seed: int, index: int, mean_stays: int) -> int:
    rng = np.random.default_rng([seed, index, 1])
    # long-tailed: log-normal with sigma 0.8, mean matched to mean_stays
    sigma = 0.8
    size = rng.lognormal(np.log(mean_stays) - sigma**2 / 2, sigma)
    return int(np.clip(size, 40, 8 * mean_stays))


def generate_hospital(
    seed: int, index: int, mean_stays: int
) -> tuple[
    npt.NDArray[np.float32], npt.NDArray[np.int8], npt.NDArray[np.float64], npt.NDArray[np.float64]
]:
    """Features, labels, true risk and a clinical score for hospital ``index``."""
    n = _hospital_size(seed, index, mean_stays)
    rng = np.random.default_rng([seed, index, 2])
    effect = rng.normal(0.0, 0.45)  # hospital-level random effect on risk
    age_shift = rng.normal(0.0, 6.0)
    severity_shift = rng.normal(0.0, 0.35)
    unit_mix = rng.dirichlet([4.0, 3.0, 2.0])
    source_mix = rng.dirichlet([5.0, 3.0, 2.0])
    lactate_missing_rate = rng.uniform(0.2, 0.85)
    wbc_missing_rate = rng.uniform(0.01, 0.2)

    severity = rng.normal(severity_shift, 1.0, n)
    age = np.clip(rng.normal(64.0 + age_shift, 15.0, n), 18, 95)
    male = rng.random(n) < 0.54
    source = rng.choice(3, size=n, p=source_mix)
    unit = rng.choice(3, size=n, p=unit_mix)
    heart_rate = 88 + 12 * severity + rng.normal(0, 14, n)
    mean_bp = 80 - 7 * severity + rng.normal(0, 12, n)
    resp_rate = 19 + 3 * severity + rng.normal(0, 5, n)
    temperature = 36.9 + 0.3 * severity * rng.choice([-1.0, 1.0], n) + rng.normal(0, 0.6, n)
    wbc = np.exp(np.log(10.0) + 0.2 * severity + rng.normal(0, 0.4, n))
    creatinine = np.exp(np.log(1.1) + 0.3 * severity + rng.normal(0, 0.5, n))
    sodium = 139 + rng.normal(0, 4, n) + 1.0 * severity
    gcs = np.clip(np.round(14.5 - 2.2 * np.maximum(severity, 0) + rng.normal(0, 1.2, n)), 3, 15)
    ventilated = rng.random(n) < _sigmoid(-1.2 + 1.1 * severity + 0.4 * (unit == 1))
    lactate = np.exp(np.log(1.6) + 0.35 * severity + rng.normal(0, 0.4, n))

    logit = (
        _INTERCEPT
        + effect
        + 0.035 * (age - 64)
        + 0.55 * severity
        + 0.015 * np.abs(heart_rate - 85)
        - 0.02 * (mean_bp - 80)
        + 0.5 * np.log(creatinine)
        - 0.22 * (gcs - 15)
        + 0.5 * ventilated
        + 0.45 * np.log(lactate / 1.5)
        + 0.06 * np.abs(sodium - 140)
        + 0.35 * (source == 0)
        - 0.4 * (source == 1)
        + 0.25 * (unit == 0)
    )
    risk = _sigmoid(logit)
    labels = (rng.random(n) < risk).astype(np.int8)
    clinical = _sigmoid(0.85 * (logit - effect) + rng.normal(0, 0.45, n))

    lactate_missing = rng.random(n) < lactate_missing_rate
    wbc_missing = rng.random(n) < wbc_missing_rate
    x = np.column_stack(
        [
            age,
            male,
            source == 0,
            source == 1,
            source == 2,
            unit == 0,
            unit == 1,
            unit == 2,
            heart_rate,
            mean_bp,
            resp_rate,
            temperature,
            np.where(wbc_missing, np.nan, wbc),
            creatinine,
            sodium,
            gcs,
            ventilated,
            np.where(lactate_missing, np.nan, lactate),
            lactate_missing,
            wbc_missing,
        ]
    ).astype(np.float32)
    return x, labels, risk, clinical


def _split(
    n: int, labels: npt.NDArray[np.int8], rng: np.random.Generator
) -> list[npt.NDArray[np.intp]]:
    """Stratified train/valid/test indices."""
    parts: list[list[npt.NDArray[np.intp]]] = [[], [], []]
    for label in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == label))
        cut1 = round(_SPLIT_FRACTIONS[0] * idx.size)
        cut2 = cut1 + round(_SPLIT_FRACTIONS[1] * idx.size)
        for part, chunk in zip(parts, (idx[:cut1], idx[cut1:cut2], idx[cut2:]), strict=True):
            part.append(chunk)
    return [np.sort(np.concatenate(part)) for part in parts]


class SyntheticSource(DataSource):
    """``hospitals`` synthetic ICU hospitals with ids ``site-001``..."""

    def __init__(self, hospitals: int, mean_stays: int, seed: int) -> None:
        if hospitals < 1:
            raise ConfigError("data.synthetic.hospitals must be >= 1")
        self.hospitals = hospitals
        self.mean_stays = mean_stays
        self.seed = seed
        width = max(3, len(str(hospitals)))
        self._ids = [f"site-{i:0{width}d}" for i in range(1, hospitals + 1)]

    def site_ids(self) -> list[SiteId]:
        return list(self._ids)

    def feature_names(self) -> tuple[str, ...]:
        return FEATURES

    def describe(self) -> str:
        return f"synthetic ICU data: {self.hospitals} hospitals, ~{self.mean_stays} stays each"

    def train_rows(self) -> dict[SiteId, int]:
        """Each hospital's training rows from its drawn size, without generating its stays.

        The split is stratified by label, so the true count can differ from this by one row;
        it is what the simulation balances its workers by, where a row is noise. Without it
        a synthetic federation was dealt round-robin: hospital sizes are long-tailed, and one
        worker got twice the training of the other.
        """
        return {
            site_id: round(_SPLIT_FRACTIONS[0] * _hospital_size(self.seed, index, self.mean_stays))
            for index, site_id in enumerate(self._ids)
        }

    def load_site(self, site_id: SiteId) -> SiteData:
        try:
            index = self._ids.index(site_id)
        except ValueError as err:
            raise ConfigError(f"unknown synthetic site {site_id!r}") from err
        x, y, risk, clinical = generate_hospital(self.seed, index, self.mean_stays)
        rng = np.random.default_rng([self.seed, index, 3])
        splits = [
            Split(x=x[i], y=y[i], reference_scores={"bayes": risk[i], "apache": clinical[i]})
            for i in _split(y.size, y, rng)
        ]
        return SiteData(site_id, FEATURES, splits[0], splits[1], splits[2])

"""The data interface every source implements: one ``SiteData`` per hospital.

A source hands out one hospital at a time; nothing here forms a pooled table of patients. The
trainer sees float32 features with NaN where a value was not measured (the model imputes and
standardises with statistics computed federatedly, see ``fl_core.data.standardise``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fl_core.types import SiteId


@dataclass(frozen=True)
class Split:
    """One split of one hospital: features, binary label, and optional reference scores.

    ``reference_scores`` holds scores that are not the model's but are reported beside it on
    the same rows: e.g. ``"apache"`` (APACHE IVa's predicted mortality) or ``"bayes"`` (the
    true risk, known only for synthetic data).
    """

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int8]
    reference_scores: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.y.ndim != 1 or self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"split shapes disagree: x {self.x.shape}, y {self.y.shape}")
        for name, scores in self.reference_scores.items():
            if scores.shape != self.y.shape:
                raise ValueError(f"reference score {name!r} has shape {scores.shape}")

    @property
    def num_examples(self) -> int:
        return int(self.y.shape[0])

    @property
    def num_positive(self) -> int:
        return int(self.y.sum())


@dataclass(frozen=True)
class SiteData:
    """Everything one hospital trains and evaluates on."""

    site_id: SiteId
    feature_names: tuple[str, ...]
    train: Split
    valid: Split
    test: Split

    def __post_init__(self) -> None:
        for split in (self.train, self.valid, self.test):
            if split.x.shape[1] != len(self.feature_names):
                raise ValueError(
                    f"site {self.site_id}: {split.x.shape[1]} columns but "
                    f"{len(self.feature_names)} feature names"
                )


class DataSource(ABC):
    """Hands out hospitals one at a time; the same interface for synthetic and prepared data."""

    @abstractmethod
    def site_ids(self) -> list[SiteId]:
        """Every hospital of this source, in a stable order."""

    @abstractmethod
    def feature_names(self) -> tuple[str, ...]:
        """Column names, identical for every hospital."""

    @abstractmethod
    def load_site(self, site_id: SiteId) -> SiteData:
        """One hospital's splits; raise ``ConfigError`` for an unknown site id."""

    @abstractmethod
    def describe(self) -> str:
        """One line for logs and the run summary."""

    def train_rows(self) -> dict[SiteId, int] | None:
        """Training rows per hospital when known without loading them (None: unknown).

        Lets a simulation give its workers equal work instead of equal numbers of hospitals.
        """
        return None

"""One line of a run folder's metrics.jsonl, as one validated model.

The report, the CLI's tables, the TensorBoard and MLflow sinks and the benchmarks all read the
same rows; a typed row lets a renamed or missing field fail where it is read (mypy, or the
validation of a line) instead of as a ``KeyError`` in a page built hours later. The names on
disk are the field names, so folders written before a field existed still read: a field added
later has a default.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from fl_core.errors import ConfigError
from fl_core.exchange.manifests import CalibrationFigures, Recalibration, RoundResult


class MetricsRow(BaseModel):
    """Round ``round``'s counts with the evaluation of the model it made (one round later)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    round: int = Field(ge=1)
    auroc: float | None
    auprc: float | None
    loss: float | None
    train_loss: float | None
    sites_accepted: int = Field(ge=0)
    sites_rejected: int = Field(ge=0)
    sites_missing: int = Field(ge=0)
    seconds: float
    reference_auroc: dict[str, float | None] = Field(default_factory=dict)
    calibration: CalibrationFigures | None = None
    reference_calibration: dict[str, CalibrationFigures] = Field(default_factory=dict)
    eval_sites: int = Field(default=0, ge=0)
    validation_loss: float | None = None
    recalibration: Recalibration | None = None

    @classmethod
    def of(cls, trained: RoundResult, evaluated: RoundResult) -> MetricsRow:
        """The row of ``trained``, with ``evaluated``'s evaluation of the model it made."""
        evaluation = evaluated.evaluation
        return cls(
            round=trained.round_index,
            auroc=evaluation.auroc if evaluation else None,
            auprc=evaluation.auprc if evaluation else None,
            loss=evaluation.loss if evaluation else None,
            train_loss=trained.train_loss,
            sites_accepted=len(trained.accepted),
            sites_rejected=len(trained.rejected),
            sites_missing=len(trained.missing),
            seconds=round(trained.closed_unix - trained.started_unix, 3),
            reference_auroc=evaluation.reference_auroc if evaluation else {},
            calibration=evaluation.calibration if evaluation else None,
            reference_calibration=evaluation.reference_calibration if evaluation else {},
            eval_sites=evaluation.num_sites if evaluation else 0,
            validation_loss=evaluation.validation_loss if evaluation else None,
            recalibration=evaluated.recalibration,
        )

    @classmethod
    def unevaluated(cls, trained: RoundResult) -> MetricsRow:
        """The row of a closed round whose model no later round evaluated: counts only.

        The validation loss and recalibration are those ``trained`` itself recorded, as a row
        built from the round with itself would carry them.
        """
        return cls(
            round=trained.round_index,
            auroc=None,
            auprc=None,
            loss=None,
            train_loss=trained.train_loss,
            sites_accepted=len(trained.accepted),
            sites_rejected=len(trained.rejected),
            sites_missing=len(trained.missing),
            seconds=round(trained.closed_unix - trained.started_unix, 3),
            validation_loss=trained.evaluation.validation_loss if trained.evaluation else None,
            recalibration=trained.recalibration,
        )

    def scalars(self) -> dict[str, float]:
        """The row's numbers that a metrics sink records over rounds (those it has)."""
        named: dict[str, float | int | None] = {
            "auroc": self.auroc,
            "auprc": self.auprc,
            "loss": self.loss,
            "train_loss": self.train_loss,
            "sites_accepted": self.sites_accepted,
            "sites_rejected": self.sites_rejected,
            "seconds": self.seconds,
        }
        return {name: float(value) for name, value in named.items() if value is not None}

    def to_line(self) -> str:
        """The row as one metrics.jsonl line (``json.dumps``, as lines have always been)."""
        return json.dumps(self.model_dump(mode="python")) + "\n"


def write_metrics(path: Path, rows: Iterable[MetricsRow]) -> None:
    """Write ``rows`` as ``path`` (metrics.jsonl), one line each."""
    with open(path, "w") as handle:
        for row in rows:
            handle.write(row.to_line())


def read_metrics(path: Path) -> list[MetricsRow]:
    """The rows of a metrics.jsonl; a line that is not a row stops with ``ConfigError``."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(MetricsRow.model_validate(json.loads(line)))
        except ValueError as error:  # json.JSONDecodeError and ValidationError both are
            first = str(error).splitlines()[0]
            raise ConfigError(
                f"{path}:{number} is not a metrics row ({first}); "
                "RUN must be a run folder written by simulate"
            ) from error
    return rows

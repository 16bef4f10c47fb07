"""eICU tables -> prepared per-hospital folders (``fedsilo data prepare --eicu-dir``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fl_core.data.defaults import EICU_MIN_STAYS
from fl_core.data.eicu.cohort import Cohort, load_cohort
from fl_core.data.eicu.features import (
    CORE_GROUPS,
    FEATURE_GROUPS,
    VOCABULARY,
    FeatureGroup,
    build_features,
    feature_specs,
)
from fl_core.data.prepared import FeatureEntry, PreparedSchema, PreparedWriter
from fl_core.errors import ConfigError

DEFAULT_MIN_STAYS = EICU_MIN_STAYS

FEATURE_SETS: dict[str, tuple[FeatureGroup, ...]] = {
    "core": CORE_GROUPS,
    "apache": ("core", "apache_prediction"),
    "full": FEATURE_GROUPS,
}
"""What ``fedsilo data prepare --features`` writes: the core set, the core set with APACHE
IVa's prediction as an input, or every group (what ``data evaluate --candidate`` chooses
among)."""
DEFAULT_FEATURE_SET = "apache"
"""The set with the lowest validation log-loss in ``data evaluate`` on the eICU demo, chosen on
training rows only (docs/model-quality.md)."""


@dataclass(frozen=True)
class PrepareResult:
    schema: PreparedSchema
    cohort: Cohort


def prepare_eicu(
    eicu_dir: Path,
    out: Path,
    *,
    min_stays: int,
    seed: int,
    overwrite: bool = False,
    feature_set: str = DEFAULT_FEATURE_SET,
) -> PrepareResult:
    """Build the cohort, one-hot and flag it, and write one folder per hospital.

    Hospitals with fewer than ``min_stays`` cohort stays are kept out and listed in
    ``schema.json`` with the reason; a hospital too small to split keeps all rows in train.
    """
    if min_stays < 1:
        raise ConfigError(f"--min-stays {min_stays}: must be at least 1")
    if feature_set not in FEATURE_SETS:
        raise ConfigError(f"--features {feature_set}: choose one of {', '.join(FEATURE_SETS)}")
    groups = FEATURE_SETS[feature_set]
    cohort = load_cohort(eicu_dir, predictor_variables="admission" in groups)
    if cohort.stays.empty:
        raise ConfigError(
            f"{eicu_dir}: no stay is left after the cohort rules ({cohort.report.excluded}); "
            "check hospitaldischargestatus, age and unitvisitnumber in the patient table"
        )
    specs = feature_specs(groups)
    x = build_features(cohort.stays, cohort.hospitals, groups)
    y = cohort.stays["label"].to_numpy(dtype=np.int8)
    references = {"apache": cohort.stays["ref_apache"].to_numpy(dtype=np.float64)}
    if cohort.has_true_risk:
        references["bayes"] = cohort.stays["ref_bayes"].to_numpy(dtype=np.float64)
    writer = PreparedWriter(
        out,
        feature_names=tuple(s.name for s in specs),
        reference_names=tuple(references),
        seed=seed,
        overwrite=overwrite,
    )
    hospital_ids = cohort.stays["hospitalid"].to_numpy(dtype=np.int64)
    bounds = np.flatnonzero(np.diff(hospital_ids)) + 1  # rows are sorted by hospitalid
    for rows in np.split(np.arange(hospital_ids.shape[0]), bounds):
        source = str(hospital_ids[rows[0]])
        if rows.shape[0] < min_stays:
            writer.exclude(source, y[rows], f"{rows.shape[0]} stays < --min-stays {min_stays}")
            continue
        writer.add_site(source, x[rows], y[rows], {k: v[rows] for k, v in references.items()})
    schema = writer.finish(
        kind="eicu",
        description=f"eICU-CRD v2.0 layout from {eicu_dir}: in-hospital mortality, first ICU "
        "stay of each admission, adults, known outcome",
        label="in-hospital death (hospitaldischargestatus == 'Expired')",
        features=tuple(
            FeatureEntry(name=s.name, kind=s.kind, source=s.source, group=s.group) for s in specs
        ),
        categories={k: (*v, "other") for k, v in VOCABULARY.items()},
        input_report=cohort.report.as_dict(),
    )
    return PrepareResult(schema, cohort)

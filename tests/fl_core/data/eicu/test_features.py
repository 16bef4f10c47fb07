"""The feature groups beyond the core set: admission items and APACHE IVa's prediction."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fl_core.data.eicu.cohort import load_cohort
from fl_core.data.eicu.features import (
    ADMISSION_FLAGS,
    FEATURE_GROUPS,
    build_features,
    feature_specs,
)
from fl_core.data.eicu.prepare import prepare_eicu
from fl_core.data.eicu.synth import TwinSummary
from fl_core.data.eicu.tables import OUTCOME_COLUMNS, TABLE_COLUMNS, USED_COLUMNS
from fl_core.data.feature_schema import kind_from_name
from fl_core.errors import ConfigError


def predvar_row(stay: int, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c: 0 for c in TABLE_COLUMNS["apachePredVar"]}
    row.update(apachepredvarid=stay + 9, patientunitstayid=stay, amilocation=-1)
    row.update(admitdiagnosis="CHF", electivesurgery=None, diedinhospital=0)
    row.update(values)
    return row


def layout(write_tables, rows) -> Path:  # type: ignore[no-untyped-def]
    patients = [
        rows.patient(1, 73, age="70", hospitaldischargestatus="Expired"),
        rows.patient(2, 73, age="45"),
        rows.patient(3, 264, age="61"),
    ]
    aps = [rows.aps(1), rows.aps(2), rows.aps(3)]
    results = rows.results(1, 0.5, died=True) + rows.results(2, -1) + rows.results(3, 0.0)
    root: Path = write_tables(patients, aps, results)
    predvar = [
        predvar_row(
            1,
            admitdiagnosis="S-CABGALONE",
            electivesurgery=1,
            thrombolytics=1,
            amilocation=4,
            cirrhosis=1,
            diabetes=1,
            diedinhospital=1,
        ),
        predvar_row(2, admitdiagnosis="SEPSISPULM", electivesurgery=0, metastaticcancer=1),
        # stay 3 has no apachePredVar row
    ]
    rows.write_csv(root / "apachePredVar.csv", list(TABLE_COLUMNS["apachePredVar"]), predvar)
    return root


def matrix(root: Path) -> pd.DataFrame:
    cohort = load_cohort(root, predictor_variables=True)
    specs = feature_specs(FEATURE_GROUPS)
    x = build_features(cohort.stays, cohort.hospitals, FEATURE_GROUPS)
    frame = pd.DataFrame(x, columns=[s.name for s in specs])
    frame.index = cohort.stays["patientunitstayid"].to_numpy()
    return frame


def test_admission_items_and_a_missing_row_as_zeros(write_tables, rows) -> None:  # type: ignore[no-untyped-def]
    x = matrix(layout(write_tables, rows))
    assert x.loc[1, ["operative", "elective_surgery", "thrombolytics", "acute_mi"]].tolist() == [
        1.0,
        1.0,
        1.0,
        1.0,
    ]
    assert x.loc[1, ["cirrhosis", "diabetes", "metastatic_cancer"]].tolist() == [1.0, 1.0, 0.0]
    assert x.loc[2, ["operative", "elective_surgery", "acute_mi"]].tolist() == [0.0, 0.0, 0.0]
    assert x.loc[2, "metastatic_cancer"] == 1.0
    admission = [s.name for s in feature_specs(("admission",))]
    # no apachePredVar row: every admission item 0, only the row-missing flag set
    assert x.loc[3, admission].to_dict() == {
        name: (1.0 if name == "predvar_row_missing" else 0.0) for name in admission
    }
    assert x.loc[[1, 2], "predvar_row_missing"].tolist() == [0.0, 0.0]


def test_apache_prediction_as_logit_with_missingness(write_tables, rows) -> None:  # type: ignore[no-untyped-def]
    x = matrix(layout(write_tables, rows))
    assert x.loc[1, "apache_iva_logit"] == pytest.approx(0.0, abs=1e-6)
    assert x.loc[1, "apache_iva_missing"] == 0.0
    assert np.isnan(x.loc[2, "apache_iva_logit"]) and x.loc[2, "apache_iva_missing"] == 1.0
    # a predicted 0 is clipped, not infinite
    assert -10 < x.loc[3, "apache_iva_logit"] < -9 and x.loc[3, "apache_iva_missing"] == 0.0


def test_core_set_unchanged_by_the_new_groups(write_tables, rows) -> None:  # type: ignore[no-untyped-def]
    root = layout(write_tables, rows)
    cohort = load_cohort(root, predictor_variables=True)
    core = build_features(cohort.stays, cohort.hospitals)
    full = build_features(cohort.stays, cohort.hospitals, FEATURE_GROUPS)
    np.testing.assert_array_equal(full[:, : core.shape[1]], core)
    assert [s.name for s in feature_specs()] == [
        s.name for s in feature_specs(FEATURE_GROUPS) if s.group == "core"
    ]


def test_every_new_feature_has_the_kind_its_name_says() -> None:
    for spec in feature_specs(FEATURE_GROUPS):
        assert kind_from_name(spec.name) == spec.kind, spec.name


def test_no_feature_reads_an_outcome_column() -> None:
    for table, outcome in OUTCOME_COLUMNS.items():
        read = set(USED_COLUMNS.get(table, ()))
        allowed = {"hospitaldischargestatus"} if table == "patient" else set()  # the label
        assert read & set(outcome) == allowed, table
    for spec in feature_specs(FEATURE_GROUPS):
        table, _, column = spec.source.partition(".")
        assert column not in OUTCOME_COLUMNS.get(table, ()), spec
    assert set(ADMISSION_FLAGS.values()) <= set(USED_COLUMNS["apachePredVar"])


def _rewrite(path: Path, change: dict[str, Any]) -> None:
    table = pd.read_csv(path)
    for column, value in change.items():
        table[column] = value(table[column]) if callable(value) else value
    with gzip.open(path, "wt", newline="") as stream:
        table.to_csv(stream, index=False)


def test_outcome_columns_do_not_reach_the_features(twin: TwinSummary, tmp_path: Path) -> None:
    """Every outcome column the twin writes (diedinhospital, the actual mortality, LOS) is
    overwritten with another value: the prepared features stay the same bit for bit."""
    copy = tmp_path / "twin"
    copy.mkdir()
    for path in twin.out.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    _rewrite(
        copy / "apachePredVar.csv.gz",
        {"diedinhospital": lambda c: 1 - c, "var03hspxlos": 99.0, "dischargelocation": 1},
    )
    _rewrite(
        copy / "apachePatientResult.csv.gz",
        {"actualhospitalmortality": "EXPIRED", "actualhospitallos": 50.0, "actualiculos": 9.0},
    )
    first = load_cohort(twin.out, predictor_variables=True)
    second = load_cohort(copy, predictor_variables=True)
    np.testing.assert_array_equal(
        build_features(first.stays, first.hospitals, FEATURE_GROUPS),
        build_features(second.stays, second.hospitals, FEATURE_GROUPS),
    )


def test_prepare_full_has_every_group_and_one_vocabulary(twin: TwinSummary, tmp_path: Path) -> None:
    full = prepare_eicu(twin.out, tmp_path / "full", min_stays=1, seed=0, feature_set="full")
    core = prepare_eicu(twin.out, tmp_path / "core", min_stays=1, seed=0, feature_set="core")
    default = prepare_eicu(twin.out, tmp_path / "default", min_stays=1, seed=0)
    groups = [f.group for f in full.schema.features]
    assert sorted(set(groups)) == sorted(FEATURE_GROUPS)
    assert groups == sorted(groups, key=FEATURE_GROUPS.index)  # core first, in group order
    assert [f.name for f in core.schema.features] == [s.name for s in feature_specs()]
    assert {f.group for f in core.schema.features} == {"core"}
    # the default: the core set and APACHE IVa's prediction (docs/model-quality.md)
    expected = feature_specs(("core", "apache_prediction"))
    assert [f.name for f in default.schema.features] == [s.name for s in expected]
    with pytest.raises(ConfigError, match="--features"):
        prepare_eicu(twin.out, tmp_path / "bad", min_stays=1, seed=0, feature_set="most")

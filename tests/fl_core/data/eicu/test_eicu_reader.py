"""The eICU reader on hand-made tables in the real layout (``"> 89"``, ``-1``, csv and gz)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from fl_core.data.eicu.cohort import load_cohort, parse_age
from fl_core.data.eicu.features import build_features, feature_specs, group_diagnosis
from fl_core.data.eicu.tables import TABLE_COLUMNS
from fl_core.errors import ConfigError


def small_layout(write_tables, rows, suffix: str = ".csv") -> Path:  # type: ignore[no-untyped-def]
    patient_row, aps_row, result_rows = rows.patient, rows.aps, rows.results
    patients = [
        patient_row(1, 73, age="> 89", hospitaldischargestatus="Expired"),
        patient_row(2, 73, age="45", gender="Male"),
        patient_row(3, 73, age="30", unitvisitnumber=2),  # later unit stay: out
        patient_row(4, 73, age="16"),  # child: out
        patient_row(5, 73, age="50", hospitaldischargestatus=None),  # outcome unknown: out
        patient_row(6, 264, age="", hospitaldischargestatus="Alive"),  # age unknown: out
        patient_row(7, 264, age="61", admissionweight=0.5, admissionheight=1.7),  # masked
        patient_row(8, 264, age="67", admissionweight=-3.0),  # impossible: dropped
    ]
    aps = [
        aps_row(1, ph=7.21, pao2=-1, creatinine=2.5, eyes=-1, motor=-1, verbal=-1, meds=-1),
        aps_row(2, ph=-1, creatinine=0.9, vent=1, intubated=1, meds=1),
        aps_row(7, urine=1500.0),
    ]
    results = result_rows(1, 0.61, died=True) + result_rows(2, -1) + result_rows(7, 0.05)
    return write_tables(patients, aps, results, suffix=suffix)


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_cohort_rules_sentinels_and_ages(write_tables, rows, suffix: str) -> None:  # type: ignore[no-untyped-def]
    cohort = load_cohort(small_layout(write_tables, rows, suffix))
    stays = cohort.stays.set_index("patientunitstayid")
    assert sorted(stays.index) == [1, 2, 7]
    assert stays.loc[1, "age"] == 90.0  # "> 89"
    assert stays.loc[1, "label"] == 1 and stays.loc[2, "label"] == 0
    assert np.isnan(stays.loc[1, "pao2"]) and stays.loc[1, "ph"] == pytest.approx(7.21)
    assert np.isnan(stays.loc[1, "eyes"])  # -1 GCS is "not measured"
    assert np.isnan(stays.loc[2, "ph"])
    assert stays.loc[1, "ref_apache"] == pytest.approx(0.61)
    assert np.isnan(stays.loc[2, "ref_apache"])  # APACHE's -1: no prediction
    assert np.isnan(stays.loc[7, "admissionweight"]) and np.isnan(stays.loc[7, "admissionheight"])
    report = cohort.report
    assert report.stays_read == 8 and report.hospitals_read == 2
    assert report.impossible_dropped["negative_weight"] == 1
    assert report.excluded == {
        "later_unit_stay": 1, "age_unknown": 1, "under_18": 1, "outcome_unknown": 1,
    }  # fmt: skip
    assert report.masked == {"admissionweight": 1, "admissionheight": 1}
    assert not cohort.has_true_risk


def test_features_raw_with_indicators_and_fixed_one_hot(write_tables, rows) -> None:  # type: ignore[no-untyped-def]
    cohort = load_cohort(small_layout(write_tables, rows))
    x = build_features(cohort.stays, cohort.hospitals)
    names = [s.name for s in feature_specs()]
    assert x.dtype == np.float32 and x.shape == (3, len(names))
    assert len(set(names)) == len(names)
    col = {n: i for i, n in enumerate(names)}
    row = {int(s): i for i, s in enumerate(cohort.stays["patientunitstayid"])}
    assert x[row[1], col["age"]] == 90.0
    assert x[row[1], col["ph"]] == pytest.approx(7.21)  # raw, not standardised
    assert x[row[1], col["pao2_missing"]] == 1.0 and np.isnan(x[row[1], col["pao2"]])
    assert x[row[1], col["gcs_missing"]] == 1.0
    assert x[row[2], col["vent"]] == 1.0 and x[row[2], col["gcs_unable_meds"]] == 1.0
    assert x[row[2], col["gender=Male"]] == 1.0 and x[row[2], col["gender=Female"]] == 0.0
    assert x[row[1], col["dxgroup=sepsis"]] == 1.0
    assert x[row[1], col["region=South"]] == 1.0 and x[row[1], col["teaching"]] == 0.0
    onehot = [i for i, s in enumerate(feature_specs()) if s.kind == "onehot"]
    assert set(np.unique(x[:, onehot])) <= {0.0, 1.0}


def test_stay_without_aps_row_is_all_missing(write_tables, rows) -> None:  # type: ignore[no-untyped-def]
    root = write_tables([rows.patient(1, 5)], [], [])
    cohort = load_cohort(root)
    x = build_features(cohort.stays, cohort.hospitals)
    col = {s.name: i for i, s in enumerate(feature_specs())}
    assert x[0, col["aps_row_missing"]] == 1.0
    assert np.isnan(x[0, col["heartrate"]]) and x[0, col["heartrate_missing"]] == 1.0
    assert np.isnan(cohort.stays["ref_apache"].iloc[0])


def test_parse_age_codes() -> None:
    import pandas as pd

    ages = parse_age(pd.Series(["> 89", "45", None, "abc", " 18 "], dtype="string"))
    assert ages.iloc[0] == 90 and ages.iloc[1] == 45 and np.isnan(ages.iloc[2])
    assert ages.iloc[3] == -np.inf and ages.iloc[4] == 18


def test_unreadable_age_is_impossible(write_tables, rows) -> None:  # type: ignore[no-untyped-def]
    root = write_tables([rows.patient(1, 5, age="old"), rows.patient(2, 5, age="150")], [], [])
    cohort = load_cohort(root)
    assert cohort.report.impossible_dropped["age_out_of_range"] == 2
    assert cohort.stays.empty


def test_diagnosis_groups() -> None:
    import pandas as pd

    dx = pd.Series(["Sepsis, GI", "CABG alone, coronary artery bypass grafting", None, "Zzz"])
    assert list(group_diagnosis(dx).fillna("NA")) == [
        "sepsis",
        "cardiac_surgery",
        "NA",
        "__other__",
    ]


def test_missing_table(write_tables, rows) -> None:  # type: ignore[no-untyped-def]
    root = small_layout(write_tables, rows)
    (root / "apacheApsVar.csv").unlink()
    with pytest.raises(ConfigError, match="apacheApsVar") as err:
        load_cohort(root)
    assert err.value.exit_code == 2


def test_missing_column_named(write_tables, rows) -> None:  # type: ignore[no-untyped-def]
    root = small_layout(write_tables, rows)
    columns = [c for c in TABLE_COLUMNS["patient"] if c != "hospitaldischargestatus"]
    rows.write_csv(root / "patient.csv", columns, [rows.patient(1, 5)])
    with pytest.raises(ConfigError, match=r"patient\.csv.*hospitaldischargestatus"):
        load_cohort(root)


def test_unreadable_value_names_column(write_tables, rows) -> None:  # type: ignore[no-untyped-def]
    root = small_layout(write_tables, rows)
    rows.write_csv(root / "patient.csv", list(TABLE_COLUMNS["patient"]), [rows.patient(1, "x73")])
    with pytest.raises(ConfigError, match=r"patient\.csv.*'hospitalid'"):
        load_cohort(root)


def test_corrupt_gzip_is_config_error(write_tables, rows) -> None:  # type: ignore[no-untyped-def]
    root = small_layout(write_tables, rows, ".csv.gz")
    (root / "hospital.csv.gz").write_bytes(b"this is not gzip")
    with pytest.raises(ConfigError, match=r"hospital\.csv\.gz"):
        load_cohort(root)


def test_empty_file_is_config_error(write_tables, rows) -> None:  # type: ignore[no-untyped-def]
    root = small_layout(write_tables, rows)
    (root / "apachePatientResult.csv").write_text("")
    with pytest.raises(ConfigError, match=r"apachePatientResult\.csv.*empty"):
        load_cohort(root)


def test_headers_matched_case_insensitively(write_tables, rows, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = small_layout(write_tables, rows)
    text = (root / "hospital.csv").read_text().splitlines()
    text[0] = text[0].upper()
    with gzip.open(root / "hospital.csv.gz", "wt") as stream:
        stream.write("\n".join(text) + "\n")
    (root / "hospital.csv").unlink()
    assert len(load_cohort(root).hospitals) == 2


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a folder"):
        load_cohort(tmp_path / "nothing")

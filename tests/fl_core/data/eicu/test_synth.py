"""The synthetic twin: the real layout, and the properties that matter to federated learning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.csv as pacsv
import pytest
from sklearn.metrics import roc_auc_score

from fl_core.data.eicu.cohort import load_cohort
from fl_core.data.eicu.features import build_features, feature_specs
from fl_core.data.eicu.synth import TWIN_FILES, hospital_sizes, synthesise
from fl_core.data.eicu.tables import TABLE_COLUMNS
from fl_core.errors import ConfigError


def test_twin_writes_the_four_tables_with_eicu_columns_and_codes(twin) -> None:  # type: ignore[no-untyped-def]
    for name, columns in TABLE_COLUMNS.items():
        table = pacsv.read_csv(twin.out / f"{name}.csv.gz")
        assert table.column_names == list(columns), name
    patient = pd.read_csv(twin.out / "patient.csv.gz", dtype={"age": str})
    assert (patient["age"] == "> 89").any()
    assert set(patient["hospitaldischargestatus"].dropna()) == {"Alive", "Expired"}
    assert patient["hospitaldischargestatus"].isna().any()
    assert patient["patientunitstayid"].is_unique
    aps = pd.read_csv(twin.out / "apacheApsVar.csv.gz")
    assert (aps["ph"] == -1).mean() > 0.5 and (aps["heartrate"] == -1).mean() < 0.1
    result = pd.read_csv(twin.out / "apachePatientResult.csv.gz")
    assert set(result["apacheversion"]) == {"IV", "IVa"}
    assert (result["predictedhospitalmortality"] == -1).any()
    hospital = pd.read_csv(twin.out / "hospital.csv.gz", keep_default_na=False)
    assert set(hospital["teachingstatus"]) <= {"t", "f"}
    assert len(hospital) == 30


def test_twin_is_read_by_the_real_reader_with_mortality_near_9_percent(twin) -> None:  # type: ignore[no-untyped-def]
    cohort = load_cohort(twin.out)
    assert cohort.has_true_risk
    assert 0.075 < twin.mortality < 0.105
    assert 0.07 < cohort.stays["label"].mean() < 0.11
    assert cohort.report.excluded["later_unit_stay"] > 0
    assert cohort.report.excluded["outcome_unknown"] > 0
    y = cohort.stays["label"].to_numpy()
    bayes = roc_auc_score(y, cohort.stays["ref_bayes"])
    apache_ok = ~np.isnan(cohort.stays["ref_apache"].to_numpy())
    apache = roc_auc_score(y[apache_ok], cohort.stays["ref_apache"].to_numpy()[apache_ok])
    assert 0.83 < bayes < 0.95 and 0.78 < apache < bayes, (bayes, apache)
    assert 0.7 < apache_ok.mean() < 0.97
    x = build_features(cohort.stays, cohort.hospitals)
    assert x.shape == (len(cohort.stays), len(feature_specs()))


def test_hospitals_differ_in_mortality_case_mix_and_missingness(twin) -> None:  # type: ignore[no-untyped-def]
    cohort = load_cohort(twin.out)
    stays = cohort.stays
    by_hospital = stays.groupby("hospitalid")
    big = by_hospital.size() >= 150
    mortality = by_hospital["label"].mean()[big]
    assert mortality.max() - mortality.min() > 0.05
    medsurg = (stays["unittype"] == "Med-Surg ICU").groupby(stays["hospitalid"]).mean()[big]
    assert medsurg.max() - medsurg.min() > 0.2
    urine_missing = stays["urine"].isna().groupby(stays["hospitalid"]).mean()[big]
    assert urine_missing.max() - urine_missing.min() > 0.2
    age = by_hospital["age"].mean()[big]
    assert age.max() - age.min() > 3


def test_sizes_long_tailed_at_eicu_scale() -> None:
    sizes = hospital_sizes(np.random.default_rng(0), 208, 200_000)
    assert sizes.sum() == 200_000 and sizes.min() >= 1
    assert (sizes < 100).sum() >= 30  # many small hospitals
    assert (sizes >= 2000).sum() >= 5  # a few with thousands
    assert sizes.max() < 0.07 * 200_000


def test_same_seed_same_twin(tmp_path: Path) -> None:
    a = synthesise(tmp_path / "a", hospitals=5, stays=400, seed=3)
    b = synthesise(tmp_path / "b", hospitals=5, stays=400, seed=3)
    assert a.sizes == b.sizes and a.deaths == b.deaths
    for name in TWIN_FILES:
        assert pacsv.read_csv(a.out / name).equals(pacsv.read_csv(b.out / name)), name


@pytest.mark.parametrize(
    ("hospitals", "stays", "match"),
    [(0, 10, "--hospitals"), (10, 5, "--stays")],
)
def test_bad_sizes(tmp_path: Path, hospitals: int, stays: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        synthesise(tmp_path / "t", hospitals=hospitals, stays=stays, seed=0)


def test_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        synthesise(tmp_path, hospitals=2, stays=20, seed=0, overwrite=True)


def test_named_groups_and_units_follow_the_feature_vocabulary() -> None:
    """The twin indexes its arrays by DxGroup and UnitType: their order is the vocabulary's."""
    from fl_core.data.eicu.features import VOCABULARY
    from fl_core.data.eicu.synth import DX_RISK, UNIT_P, DxGroup, UnitType, by_group

    assert tuple(group.label for group in DxGroup) == VOCABULARY["dxgroup"]
    assert len(UnitType) == len(VOCABULARY["unittype"]) == len(UNIT_P)
    assert VOCABULARY["unittype"][UnitType.NEURO] == "Neuro ICU"
    assert VOCABULARY["unittype"][UnitType.CTICU] == "CTICU"
    assert DX_RISK[DxGroup.CARDIAC_ARREST] == 1.3 and DX_RISK[DxGroup.CARDIAC_MEDICAL] == 0.0
    assert by_group({DxGroup.TRAUMA: 2.0}).tolist() == [0.0] * 9 + [2.0, 0.0]


def test_twin_predictor_table_is_read_and_follows_the_case_mix(twin) -> None:  # type: ignore[no-untyped-def]
    from fl_core.data.eicu.features import FEATURE_GROUPS

    cohort = load_cohort(twin.out, predictor_variables=True)
    specs = feature_specs(FEATURE_GROUPS)
    x = pd.DataFrame(
        build_features(cohort.stays, cohort.hospitals, FEATURE_GROUPS),
        columns=[s.name for s in specs],
    )
    surgical = x["dxgroup=cardiac_surgery"] + x["dxgroup=surgical_other"] > 0
    assert x.loc[surgical, "operative"].mean() > 0.9 and x.loc[~surgical, "operative"].mean() < 0.5
    assert 0.1 < x["diabetes"].mean() < 0.3
    assert x["apache_iva_missing"].mean() > 0.0 and x["apache_iva_logit"].notna().mean() > 0.8

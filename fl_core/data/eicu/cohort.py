"""From the eICU tables to one row per stay of the mortality cohort.

The cohort: the first ICU unit stay of each hospital admission (``unitvisitnumber == 1``) of an
adult (age >= 18, ``"> 89"`` read as 90) whose hospital discharge status is known. This is the
definition under which APACHE IVa reaches the AUROC reported for the eICU demo (0.865), so the
yardstick users compare against is the published one. Label: ``hospitaldischargestatus ==
"Expired"``. Everything is columnar (pandas on Arrow tables); nothing loops over rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow.csv as pacsv

from fl_core.data.eicu.tables import APS_SENTINEL_COLUMNS, TRUE_RISK_FILE, read_table
from fl_core.errors import ConfigError

AGE_OVER_89 = 90.0
"""eICU writes ages above 89 as the text ``"> 89"`` (HIPAA); they are read as 90."""

ADULT_AGE = 18.0
POSSIBLE_AGE = (0.0, 120.0)
"""Ages outside this range cannot be true: the row is dropped and counted."""

PLAUSIBLE_RANGE: dict[str, tuple[float, float]] = {
    "admissionweight": (20.0, 400.0),
    "admissionheight": (100.0, 250.0),
}
"""Positive but implausible values (weight in grams, height in metres) are masked to NaN."""


@dataclass
class CohortReport:
    """What happened to every stay read, so that nothing is dropped silently."""

    stays_read: int = 0
    hospitals_read: int = 0
    impossible_dropped: dict[str, int] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)
    masked: dict[str, int] = field(default_factory=dict)
    cohort_stays: int = 0
    cohort_deaths: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "stays_read": self.stays_read,
            "hospitals_read": self.hospitals_read,
            "impossible_dropped": dict(self.impossible_dropped),
            "excluded": dict(self.excluded),
            "implausible_masked": dict(self.masked),
            "cohort_stays": self.cohort_stays,
            "cohort_deaths": self.cohort_deaths,
        }


@dataclass(frozen=True)
class Cohort:
    """One row per cohort stay: identifiers, label, reference scores and raw feature inputs."""

    stays: pd.DataFrame
    hospitals: pd.DataFrame
    report: CohortReport
    has_true_risk: bool


def parse_age(text: pd.Series) -> pd.Series:
    """Text ages to float: ``"> 89"`` -> 90, empty -> NaN, anything unreadable -> -inf.

    Unreadable text is kept apart from empty (``-inf``) so that it is counted as impossible
    rather than as unknown.
    """
    stripped = text.astype("string").str.strip()
    over = stripped.str.fullmatch(r">\s*89").fillna(False).astype(bool)
    numeric = pd.to_numeric(stripped.mask(over), errors="coerce").astype("float64")
    unreadable = stripped.notna() & ~over & numeric.isna()
    numeric = numeric.mask(over, AGE_OVER_89).mask(unreadable, -np.inf)
    return numeric


def load_cohort(eicu_dir: Path, *, predictor_variables: bool = False) -> Cohort:
    """Read the tables of ``eicu_dir`` and build the cohort (see the module docstring).

    With ``predictor_variables`` the ``apachePredVar`` table is read too, its columns joined
    as ``predvar_<column>`` (only ``USED_COLUMNS``, never its outcome columns).
    """
    if not eicu_dir.is_dir():
        raise ConfigError(f"--eicu-dir {eicu_dir}: not a folder; give the eICU CSV folder")
    report = CohortReport()
    patient = read_table(eicu_dir, "patient").to_pandas()
    hospital = read_table(eicu_dir, "hospital").to_pandas()
    aps = read_table(eicu_dir, "apacheApsVar").to_pandas()
    result = read_table(eicu_dir, "apachePatientResult").to_pandas()
    report.stays_read = len(patient)
    report.hospitals_read = int(patient["hospitalid"].nunique())

    if patient["patientunitstayid"].isna().any() or patient["hospitalid"].isna().any():
        raise ConfigError(
            f"{eicu_dir}/patient: empty patientunitstayid or hospitalid; every stay needs both"
        )
    if patient["patientunitstayid"].duplicated().any():
        raise ConfigError(f"{eicu_dir}/patient: patientunitstayid repeats; it must be unique")

    patient["age"] = parse_age(patient["age"])
    patient = _drop_impossible(patient, report)
    patient = _select_cohort(patient, report)
    _mask_implausible(patient, report)

    stays = patient.merge(_first_aps_rows(aps), on="patientunitstayid", how="left")
    stays["aps_row_missing"] = stays["apsrow"].isna().astype("float32")
    stays = stays.drop(columns=["apsrow"])
    stays["ref_apache"] = _apache_iva(result, stays["patientunitstayid"])
    if predictor_variables:
        stays = stays.merge(_predictor_rows(eicu_dir), on="patientunitstayid", how="left")
        stays["predvar_row_missing"] = stays["predvar_row"].isna().astype("float32")
        stays = stays.drop(columns=["predvar_row"])
    has_true_risk = (eicu_dir / TRUE_RISK_FILE).is_file()
    if has_true_risk:
        stays["ref_bayes"] = _true_risk(eicu_dir / TRUE_RISK_FILE, stays["patientunitstayid"])
    stays["label"] = (stays["hospitaldischargestatus"] == "Expired").astype("int8")
    stays = stays.sort_values(["hospitalid", "patientunitstayid"], kind="stable")
    report.cohort_stays = len(stays)
    report.cohort_deaths = int(stays["label"].sum())
    hospitals = hospital.drop_duplicates("hospitalid").set_index("hospitalid")
    return Cohort(stays.reset_index(drop=True), hospitals, report, has_true_risk)


def _drop_impossible(patient: pd.DataFrame, report: CohortReport) -> pd.DataFrame:
    """Drop rows whose values cannot be true (negative weight, impossible age) and count them."""
    age = patient["age"]
    rules = {
        "age_out_of_range": (age < POSSIBLE_AGE[0]) | (age > POSSIBLE_AGE[1]),
        "negative_weight": patient["admissionweight"] < 0,
        "negative_height": patient["admissionheight"] < 0,
    }
    return _drop_rows(patient, rules, report.impossible_dropped)


def _select_cohort(patient: pd.DataFrame, report: CohortReport) -> pd.DataFrame:
    """First unit stay of each admission, adults, known outcome; each exclusion counted."""
    status = patient["hospitaldischargestatus"]
    rules = {
        "later_unit_stay": patient["unitvisitnumber"].fillna(1) != 1,
        "age_unknown": patient["age"].isna(),
        "under_18": patient["age"] < ADULT_AGE,
        "outcome_unknown": ~status.isin(["Alive", "Expired"]),
    }
    return _drop_rows(patient, rules, report.excluded)


def _drop_rows(
    patient: pd.DataFrame, rules: dict[str, pd.Series], counts: dict[str, int]
) -> pd.DataFrame:
    """The rows no rule hits; ``counts[reason]``: rows first hit by that rule, in rule order."""
    dropped = np.zeros(len(patient), dtype=bool)
    for reason, mask in rules.items():
        hit = mask.fillna(False).to_numpy(dtype=bool)
        counts[reason] = int((hit & ~dropped).sum())
        dropped |= hit
    return patient.loc[~dropped].copy()


def _mask_implausible(patient: pd.DataFrame, report: CohortReport) -> None:
    for column, (low, high) in PLAUSIBLE_RANGE.items():
        values = patient[column]
        mask = (values < low) | (values > high)
        report.masked[column] = int(mask.sum())
        patient[column] = values.mask(mask)


def _first_aps_rows(aps: pd.DataFrame) -> pd.DataFrame:
    """One APS row per stay, with eICU's ``-1`` (not measured) turned into NaN."""
    aps = aps.drop_duplicates("patientunitstayid").copy()
    for column in APS_SENTINEL_COLUMNS:
        values = aps[column].astype("float64")
        aps[column] = values.mask(values == -1)
    aps["apsrow"] = 1.0
    return aps


def _predictor_rows(eicu_dir: Path) -> pd.DataFrame:
    """One ``apachePredVar`` row per stay, its columns named ``predvar_<column>``."""
    table = read_table(eicu_dir, "apachePredVar").to_pandas()
    table = table.drop_duplicates("patientunitstayid")
    renamed = {c: f"predvar_{c}" for c in table.columns if c != "patientunitstayid"}
    table = table.rename(columns=renamed)
    table["predvar_row"] = 1.0
    return table


def _apache_iva(result: pd.DataFrame, stay_ids: pd.Series) -> npt.NDArray[np.float64]:
    """APACHE IVa ``predictedhospitalmortality`` per stay; NaN where none or ``-1``."""
    iva = result.loc[result["apacheversion"].astype("string").str.strip() == "IVa"]
    iva = iva.drop_duplicates("patientunitstayid").set_index("patientunitstayid")
    score = iva["predictedhospitalmortality"].astype("float64")
    score = score.mask((score < 0) | (score > 1))
    return np.asarray(score.reindex(stay_ids.to_numpy()).to_numpy(dtype=np.float64), np.float64)


def _true_risk(path: Path, stay_ids: pd.Series) -> npt.NDArray[np.float64]:
    """The synthetic twin's true risk per stay (its side file); NaN where a stay lacks one."""
    try:
        table = pacsv.read_csv(str(path)).to_pandas()
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot read the true-risk side file ({err})") from err
    for column in ("patientunitstayid", "truerisk"):
        if column not in table.columns:
            raise ConfigError(f"{path}: column {column!r} missing from the true-risk side file")
    risk = table.drop_duplicates("patientunitstayid").set_index("patientunitstayid")["truerisk"]
    values = risk.astype("float64").reindex(stay_ids.to_numpy()).to_numpy(dtype=np.float64)
    return np.asarray(values, dtype=np.float64)

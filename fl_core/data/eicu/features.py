"""The eICU feature set: fixed names and vocabularies, identical for every hospital.

Values stay raw (NaN where not measured): imputation and standardisation statistics are
computed federatedly (``fl_core.data.standardise``), never here. Every physiology variable gets
an explicit 0/1 missingness indicator, because in an ICU whether a lab was drawn says something
about the patient. Categorical columns are one-hot over a fixed vocabulary (eICU's own codes)
plus an ``other`` column; a missing category is all zeros.

Features come in groups. ``core`` is the set every federation has trained on so far. Two more
are read only when asked for (``fedsilo data prepare --features full``): ``admission``, what
APACHE records about the admission in ``apachePredVar`` beyond the core set (operative and
elective status, thrombolysis, myocardial infarction, chronic health items, readmission), and
``apache_prediction``, APACHE IVa's own predicted risk as an input, where a hospital has one,
so that a consortium can customise APACHE to its population. Both are day-1 data; no feature
is read from a column written after the stay ended (``tables.OUTCOME_COLUMNS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd

from fl_core.data.eicu.tables import APS_SENTINEL_COLUMNS

FeatureKind: TypeAlias = Literal["numeric", "indicator", "onehot"]
FeatureGroup: TypeAlias = Literal["core", "admission", "apache_prediction"]
FEATURE_GROUPS: tuple[FeatureGroup, ...] = ("core", "admission", "apache_prediction")
"""Every group, in column order."""
CORE_GROUPS: tuple[FeatureGroup, ...] = ("core",)

NUMERIC: tuple[str, ...] = ("age", "admissionweight", "admissionheight")
APS_FLAGS: tuple[str, ...] = ("intubated", "vent", "dialysis")
GCS: tuple[str, ...] = ("eyes", "motor", "verbal")
PHYSIOLOGY: tuple[str, ...] = tuple(c for c in APS_SENTINEL_COLUMNS if c not in (*GCS, "meds"))
"""The APACHE physiology variables (worst value of the first ICU day), NaN if not measured."""

VOCABULARY: dict[str, tuple[str, ...]] = {
    "gender": ("Male", "Female"),
    "ethnicity": (
        "Caucasian",
        "African American",
        "Hispanic",
        "Asian",
        "Native American",
        "Other/Unknown",
    ),
    "unittype": (
        "Med-Surg ICU",
        "MICU",
        "SICU",
        "CCU-CTICU",
        "Cardiac ICU",
        "Neuro ICU",
        "CSICU",
        "CTICU",
    ),
    "unitadmitsource": (
        "Emergency Department",
        "Floor",
        "Operating Room",
        "Direct Admit",
        "Recovery Room",
        "Step-Down Unit (SDU)",
        "Acute Care/Floor",
        "ICU to SDU",
        "ICU",
        "Other ICU",
        "Other Hospital",
        "PACU",
        "Chest Pain Center",
    ),
    "dxgroup": (
        "sepsis",
        "cardiac_arrest",
        "cardiac_surgery",
        "cardiac_medical",
        "neuro",
        "respiratory",
        "gi_bleed",
        "overdose",
        "metabolic",
        "trauma",
        "surgical_other",
    ),
    "numbedscategory": ("<100", "100 - 249", "250 - 499", ">= 500"),
    "region": ("Midwest", "South", "West", "Northeast"),
}
"""Fixed one-hot vocabularies (recorded in schema.json); anything else goes to ``=other``."""

DX_GROUP_PATTERNS: tuple[tuple[str, str], ...] = (
    ("cardiac_arrest", r"cardiac arrest"),
    ("sepsis", r"sepsis"),
    ("cardiac_surgery", r"cabg|valve|aortic|coronary artery bypass"),
    ("overdose", r"overdose|toxicity|withdrawal"),
    ("gi_bleed", r"bleeding, (?:upper|lower|gi)|gi bleed|varices"),
    ("trauma", r"trauma|fracture|injury"),
    ("neuro", r"cva|stroke|hemorrhage|seizure|coma|subarachnoid|neoplasm.*cranial|craniotomy"),
    ("respiratory", r"pneumonia|emphysema|bronchitis|respiratory|asthma|embol|edema, pulmonary"),
    ("cardiac_medical", r"chf|myocardial|rhythm|angina|heart|chest pain|cardiomyopathy|shock"),
    ("metabolic", r"ketoacidosis|diabet|hypoglyc|electrolyte|renal|acid-base"),
    ("surgical_other", r"ectomy|otomy|surgery|resection|repair|transplant|for |bypass"),
)
"""APACHE admission diagnoses grouped into case-mix classes by keyword, first match wins."""

ADMISSION_FLAGS: dict[str, str] = {
    "elective_surgery": "electivesurgery",
    "thrombolytics": "thrombolytics",
    "mi_within_6_months": "midur",
    "internal_mammary_graft": "ima",
    "icu_readmission": "readmit",
    "active_treatment": "activetx",
    "aids": "aids",
    "hepatic_failure": "hepaticfailure",
    "lymphoma": "lymphoma",
    "metastatic_cancer": "metastaticcancer",
    "leukemia": "leukemia",
    "immunosuppression": "immunosuppression",
    "cirrhosis": "cirrhosis",
    "diabetes": "diabetes",
}
"""``admission`` 0/1 features -> their ``apachePredVar`` column (1 only where it is 1)."""
ADMISSION_DERIVED: dict[str, str] = {
    "operative": "admitdiagnosis",
    "acute_mi": "amilocation",
    "predvar_row_missing": "",
}
"""``admission`` features derived from a column: an operative APACHE diagnosis code (``S-``
prefix), an acute myocardial infarction (a recorded AMI location), no ``apachePredVar`` row."""
APACHE_PREDICTION: tuple[str, ...] = ("apache_iva_logit", "apache_iva_missing")
"""``apache_prediction``: logit of APACHE IVa's predicted hospital mortality (NaN where none)
and its missingness indicator."""
APACHE_RISK_CLIP = 1e-4
"""Predicted risks are clipped to [clip, 1 - clip] before the logit: APACHE writes 0 and 1."""


@dataclass(frozen=True)
class FeatureSpec:
    """Name, kind and source column of one feature (what schema.json records)."""

    name: str
    kind: FeatureKind
    source: str
    group: FeatureGroup = "core"


def feature_specs(groups: tuple[FeatureGroup, ...] = CORE_GROUPS) -> tuple[FeatureSpec, ...]:
    """The features of ``groups`` in column order; the same tuple for every hospital."""
    specs: list[FeatureSpec] = []
    if "core" in groups:
        specs += _core_specs()
    if "admission" in groups:
        specs += [
            FeatureSpec(name, "indicator", f"apachePredVar.{column}", "admission")
            for name, column in ADMISSION_FLAGS.items()
        ]
        specs += [
            FeatureSpec(name, "indicator", f"apachePredVar.{column}".rstrip("."), "admission")
            for name, column in ADMISSION_DERIVED.items()
        ]
    if "apache_prediction" in groups:
        source = "apachePatientResult.predictedhospitalmortality"
        specs.append(FeatureSpec(APACHE_PREDICTION[0], "numeric", source, "apache_prediction"))
        specs.append(FeatureSpec(APACHE_PREDICTION[1], "indicator", source, "apache_prediction"))
    return tuple(specs)


def _core_specs() -> list[FeatureSpec]:
    specs: list[FeatureSpec] = [FeatureSpec(c, "numeric", f"patient.{c}") for c in NUMERIC]
    specs += [FeatureSpec(c, "numeric", f"apacheApsVar.{c}") for c in (*GCS, *PHYSIOLOGY)]
    specs += [FeatureSpec(c, "indicator", f"apacheApsVar.{c}") for c in APS_FLAGS]
    specs.append(FeatureSpec("gcs_unable_meds", "indicator", "apacheApsVar.meds"))
    specs.append(FeatureSpec("teaching", "indicator", "hospital.teachingstatus"))
    specs.append(FeatureSpec("aps_row_missing", "indicator", "apacheApsVar"))
    for column in (*NUMERIC[1:], "gcs", *PHYSIOLOGY):
        source = f"patient.{column}" if column in NUMERIC else f"apacheApsVar.{column}"
        specs.append(FeatureSpec(f"{column}_missing", "indicator", source))
    for column, values in VOCABULARY.items():
        table = "hospital" if column in ("numbedscategory", "region") else "patient"
        source = f"{table}.{'apacheadmissiondx' if column == 'dxgroup' else column}"
        specs += [FeatureSpec(f"{column}={v}", "onehot", source) for v in (*values, "other")]
    return specs


def group_diagnosis(dx: pd.Series) -> pd.Series:
    """Admission diagnosis text -> case-mix group (NaN where no diagnosis was recorded)."""
    text = dx.astype("string").str.lower()
    group = pd.Series(pd.NA, index=dx.index, dtype="string")
    for name, pattern in DX_GROUP_PATTERNS:
        hit = text.str.contains(pattern, regex=True).fillna(False).astype(bool) & group.isna()
        group = group.mask(hit, name)
    return group.mask(text.notna() & group.isna(), "__other__")


def teaching_flag(values: pd.Series) -> pd.Series:
    """``teachingstatus`` as 0/1: eICU exports write ``t``/``f`` or ``true``/``false``."""
    text = values.astype("string").str.strip().str.lower()
    flag = pd.Series(np.nan, index=values.index, dtype="float64")
    flag = flag.mask(text.isin(["t", "true", "1", "yes"]).fillna(False).astype(bool), 1.0)
    return flag.mask(text.isin(["f", "false", "0", "no"]).fillna(False).astype(bool), 0.0)


def _number(series: pd.Series) -> npt.NDArray[np.float64]:
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return np.asarray(values, dtype=np.float64)


def build_features(
    stays: pd.DataFrame,
    hospitals: pd.DataFrame,
    groups: tuple[FeatureGroup, ...] = CORE_GROUPS,
) -> npt.NDArray[np.float32]:
    """The float32 feature matrix of the cohort rows, columns in ``feature_specs(groups)``
    order. ``admission`` needs the cohort's ``predvar_*`` columns (``load_cohort`` with
    ``predictor_variables``)."""
    columns: list[npt.NDArray[np.float64]] = []
    if "core" in groups:
        columns += _core_columns(stays, hospitals)
    if "admission" in groups:
        columns += admission_columns(stays)
    if "apache_prediction" in groups:
        columns += apache_prediction_columns(stays["ref_apache"])
    return np.column_stack(columns).astype(np.float32)


def admission_columns(stays: pd.DataFrame) -> list[npt.NDArray[np.float64]]:
    """The ``admission`` group: 0/1 each, 0 where not recorded (no row, or an empty field)."""
    columns = [
        (_number(stays[f"predvar_{c}"]) == 1).astype(np.float64) for c in ADMISSION_FLAGS.values()
    ]
    code = stays["predvar_admitdiagnosis"].astype("string").str.strip().str.upper()
    columns.append(code.str.startswith("S-").fillna(False).to_numpy(dtype=np.float64))
    columns.append((_number(stays["predvar_amilocation"]) > 0).astype(np.float64))
    columns.append(_number(stays["predvar_row_missing"]))
    return columns


def apache_prediction_columns(risk: pd.Series) -> list[npt.NDArray[np.float64]]:
    """APACHE IVa's predicted risk as its logit (NaN where none) and a missingness flag."""
    values = _number(risk)
    known = np.isfinite(values) & (values >= 0) & (values <= 1)
    clipped = np.clip(np.where(known, values, 0.5), APACHE_RISK_CLIP, 1 - APACHE_RISK_CLIP)
    logit = np.where(known, np.log(clipped / (1 - clipped)), np.nan)
    return [logit, (~known).astype(np.float64)]


def _core_columns(stays: pd.DataFrame, hospitals: pd.DataFrame) -> list[npt.NDArray[np.float64]]:
    hosp = hospitals.reindex(stays["hospitalid"].to_numpy())
    columns: list[npt.NDArray[np.float64]] = []
    number = _number
    for column in (*NUMERIC, *GCS, *PHYSIOLOGY):
        columns.append(number(stays[column]))
    for column in APS_FLAGS:
        columns.append(number(stays[column]))
    columns.append((number(stays["meds"]) == 1).astype(np.float64))
    columns.append(teaching_flag(hosp["teachingstatus"]).to_numpy(dtype=np.float64))
    columns.append(number(stays["aps_row_missing"]))
    gcs_missing = np.isnan(number(stays["eyes"]))
    for column in (*NUMERIC[1:], "gcs", *PHYSIOLOGY):
        values = gcs_missing if column == "gcs" else np.isnan(number(stays[column]))
        columns.append(values.astype(np.float64))
    categorical = {
        "gender": stays["gender"],
        "ethnicity": stays["ethnicity"],
        "unittype": stays["unittype"],
        "unitadmitsource": stays["unitadmitsource"],
        "dxgroup": group_diagnosis(stays["apacheadmissiondx"]),
        "numbedscategory": hosp["numbedscategory"],
        "region": hosp["region"],
    }
    for column, vocabulary in VOCABULARY.items():
        columns += one_hot(categorical[column], vocabulary)
    return columns


def one_hot(values: pd.Series, vocabulary: tuple[str, ...]) -> list[npt.NDArray[np.float64]]:
    """0/1 columns for each vocabulary value plus ``other``; missing is all zeros."""
    text = values.astype("string").str.strip()
    codes = pd.Index(list(vocabulary), dtype="string").get_indexer(text)
    out = [(codes == index).astype(np.float64) for index in range(len(vocabulary))]
    out.append((text.notna().to_numpy(dtype=bool) & (codes < 0)).astype(np.float64))
    return out

"""A synthetic twin of eICU-CRD v2.0: the same five tables, written for the real reader.

Nobody may ship eICU, so everything runs and is tested on this twin. It writes ``patient``,
``hospital``, ``apacheApsVar``, ``apachePatientResult`` and ``apachePredVar`` (whose admission
items do not enter the true risk) with eICU's names, columns, types and
codes (``"> 89"`` ages, ``-1`` for "not measured", ``Alive``/``Expired``), so the one reader in
``cohort.py`` reads both. Where it matters to federated learning it looks like the real thing:

* hospital sizes are long-tailed (log-normal shares, capped): a few with thousands of stays,
  many with under 100;
* each hospital has its own unit-type mix, surgical share, age shift (by region), lab
  missingness rates and a random effect on the log-odds of death, so mortality ranges widely;
* death is drawn from a known risk that depends on the (true, possibly unrecorded) physiology,
  case mix and the hospital effect, calibrated to about 9 % overall; that risk is written to a
  side file (``fedsilo_true_risk.csv.gz``) so the Bayes AUROC can be reported;
* a synthetic ``predictedhospitalmortality`` plays APACHE IVa: good but imperfect (it misses
  the hospital effect and carries noise), with ``-1`` where APACHE gave no prediction;
* some stays are later unit stays of the same admission and some are children or have an
  unknown outcome, so the cohort rules have something to exclude.

Everything is drawn with numpy in whole columns; no Python loop runs over stays.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from fl_core.data.eicu.features import VOCABULARY
from fl_core.data.eicu.tables import TABLE_COLUMNS, TRUE_RISK_FILE
from fl_core.errors import ConfigError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

TARGET_MORTALITY = 0.09
SIZE_SIGMA = 1.8
SIZE_Z_MAX = 1.8
SIZE_Z_MIN = 3.0
LATER_UNIT_STAY_RATE = 0.12
UNKNOWN_OUTCOME_RATE = 0.012
APACHE_MISSING_RATE = 0.06
TWIN_FILES = (
    "patient.csv.gz",
    "hospital.csv.gz",
    "apacheApsVar.csv.gz",
    "apachePatientResult.csv.gz",
    "apachePredVar.csv.gz",
    TRUE_RISK_FILE,
)

REGIONS = ("Midwest", "South", "West", "Northeast")
REGION_P = np.array([0.30, 0.30, 0.20, 0.12, 0.08])  # last: region not recorded
REGION_AGE_SHIFT = np.array([1.0, -1.5, -0.5, 2.0, 0.0])
ETHNICITY_P = np.array(  # rows: region (+ missing); columns: VOCABULARY["ethnicity"]
    [
        [0.86, 0.07, 0.03, 0.01, 0.01, 0.02],
        [0.70, 0.20, 0.06, 0.01, 0.005, 0.025],
        [0.68, 0.04, 0.17, 0.07, 0.02, 0.02],
        [0.74, 0.12, 0.08, 0.04, 0.0, 0.02],
        [0.77, 0.10, 0.06, 0.02, 0.01, 0.04],
    ]
)


class UnitType(IntEnum):
    """ICU types, numbered in ``VOCABULARY["unittype"]`` order (the twin's arrays index by it)."""

    MED_SURG = 0
    MICU = 1
    SICU = 2
    CCU_CTICU = 3
    CARDIAC = 4
    NEURO = 5
    CSICU = 6
    CTICU = 7


class DxGroup(IntEnum):
    """Diagnosis groups, numbered in ``VOCABULARY["dxgroup"]`` order; ``label`` is the name
    there."""

    SEPSIS = 0
    CARDIAC_ARREST = 1
    CARDIAC_SURGERY = 2
    CARDIAC_MEDICAL = 3
    NEURO = 4
    RESPIRATORY = 5
    GI_BLEED = 6
    OVERDOSE = 7
    METABOLIC = 8
    TRAUMA = 9
    SURGICAL_OTHER = 10

    @property
    def label(self) -> str:
        return self.name.lower()


def by_group(values: dict[DxGroup, float]) -> F64:
    """One value per diagnosis group, in ``DxGroup`` order (0 for a group not named)."""
    return np.array([values.get(group, 0.0) for group in DxGroup], dtype=np.float64)


UNIT_P = np.array([0.60, 0.09, 0.05, 0.06, 0.07, 0.04, 0.045, 0.045])  # by UnitType
MEDICAL_SOURCES = (
    ("Emergency Department", 0.62),
    ("Floor", 0.15),
    ("Direct Admit", 0.08),
    ("Step-Down Unit (SDU)", 0.04),
    ("Acute Care/Floor", 0.03),
    ("Other Hospital", 0.03),
    ("Other ICU", 0.03),
    ("ICU", 0.01),
    ("Chest Pain Center", 0.01),
)
SURGICAL_SOURCES = (("Operating Room", 0.72), ("Recovery Room", 0.2), ("PACU", 0.08))
DIAGNOSES: dict[str, tuple[str, ...]] = {
    "sepsis": ("Sepsis, pulmonary", "Sepsis, renal/UTI (including bladder)", "Sepsis, GI"),
    "cardiac_arrest": (
        "Cardiac arrest (with or without respiratory arrest; for respiratory arrest see "
        "Respiratory System)",
    ),
    "cardiac_surgery": ("CABG alone, coronary artery bypass grafting", "Aortic valve replacement"),
    "cardiac_medical": (
        "CHF, congestive heart failure",
        "Rhythm disturbance (atrial, supraventricular)",
        "Infarction, acute myocardial (MI)",
    ),
    "neuro": (
        "CVA, cerebrovascular accident/stroke",
        "Seizures (primary-no structural brain disease)",
    ),
    "respiratory": ("Pneumonia, bacterial", "Emphysema/bronchitis"),
    "gi_bleed": ("Bleeding, upper GI", "Bleeding, lower GI"),
    "overdose": ("Overdose, sedatives, hypnotics, antipsychotics, benzodiazepines",),
    "metabolic": ("Diabetic ketoacidosis",),
    "trauma": ("Head only trauma", "Hip fracture"),
    "surgical_other": ("Endarterectomy, carotid", "Cholecystectomy"),
}
DX_GROUPS = VOCABULARY["dxgroup"]
D = DxGroup
DX_MEDICAL = by_group(
    {
        D.SEPSIS: 0.17,
        D.CARDIAC_ARREST: 0.06,
        D.CARDIAC_MEDICAL: 0.27,
        D.NEURO: 0.10,
        D.RESPIRATORY: 0.14,
        D.GI_BLEED: 0.08,
        D.OVERDOSE: 0.08,
        D.METABOLIC: 0.10,
    }
)
DX_SURGICAL = by_group(
    {D.CARDIAC_SURGERY: 0.25, D.NEURO: 0.08, D.TRAUMA: 0.17, D.SURGICAL_OTHER: 0.50}
)
DX_SEVERITY = by_group(
    {
        D.SEPSIS: 0.5,
        D.CARDIAC_ARREST: 1.2,
        D.CARDIAC_SURGERY: -0.2,
        D.NEURO: 0.3,
        D.RESPIRATORY: 0.3,
        D.OVERDOSE: -0.3,
        D.METABOLIC: -0.2,
        D.SURGICAL_OTHER: -0.4,
    }
)
DX_RISK = by_group(
    {
        D.SEPSIS: 0.35,
        D.CARDIAC_ARREST: 1.3,
        D.CARDIAC_SURGERY: -0.8,
        D.NEURO: 0.45,
        D.RESPIRATORY: 0.25,
        D.GI_BLEED: -0.1,
        D.OVERDOSE: -1.1,
        D.METABOLIC: -1.0,
        D.TRAUMA: 0.1,
        D.SURGICAL_OTHER: -0.5,
    }
)
UNIT_DX_BOOST: dict[UnitType, tuple[DxGroup, float]] = {
    UnitType.CCU_CTICU: (D.CARDIAC_MEDICAL, 3.0),
    UnitType.CARDIAC: (D.CARDIAC_MEDICAL, 3.0),
    UnitType.NEURO: (D.NEURO, 5.0),
    UnitType.CSICU: (D.CARDIAC_SURGERY, 6.0),
    UnitType.CTICU: (D.CARDIAC_SURGERY, 6.0),
}
"""A specialised unit sees its diagnosis group this many times as often."""
SURGICAL_UNITS = (UnitType.SICU, UnitType.CSICU, UnitType.CTICU)
UNCONSCIOUS_DX = (D.CARDIAC_ARREST, D.NEURO, D.OVERDOSE)
"""Diagnosis groups whose patients often arrive with an impaired Glasgow Coma Scale."""
LAB_MISSING = {  # base rate of "not measured" (eICU demo rates)
    "urine": 0.52,
    "wbc": 0.31,
    "temperature": 0.10,
    "respiratoryrate": 0.03,
    "sodium": 0.25,
    "heartrate": 0.02,
    "meanbp": 0.03,
    "ph": 0.80,
    "hematocrit": 0.29,
    "creatinine": 0.25,
    "albumin": 0.61,
    "pao2": 0.80,
    "pco2": 0.80,
    "bun": 0.26,
    "glucose": 0.18,
    "bilirubin": 0.65,
    "fio2": 0.80,
}
BLOOD_GAS = ("ph", "pao2", "pco2", "fio2")


@dataclass(frozen=True)
class TwinSummary:
    """What the twin holds, for the CLI summary and the tests."""

    out: Path
    hospitals: int
    stays: int
    deaths: int
    sizes: tuple[int, ...]
    hospital_mortality: tuple[float, ...]

    @property
    def mortality(self) -> float:
        return self.deaths / max(self.stays, 1)


def sigmoid(z: F64) -> F64:
    return 1.0 / (1.0 + np.exp(-z))


def logit(p: F64) -> F64:
    return np.log(p / (1.0 - p))


def choose(rng: np.random.Generator, probs: F64, n: int | None = None) -> I64:
    """Index drawn from each row of ``probs`` (or ``n`` draws from one vector), vectorised."""
    probs = np.atleast_2d(probs)
    rows = probs.shape[0] if n is None else n
    cum = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    u = rng.random(rows)
    index = (u[:, None] > (cum if cum.shape[0] == rows else cum[0])).sum(axis=1)
    return np.asarray(np.minimum(index, probs.shape[1] - 1), dtype=np.int64)


def hospital_sizes(rng: np.random.Generator, hospitals: int, stays: int) -> I64:
    """Long-tailed sizes summing to ``stays``: log-normal shares, at least 1 stay each.

    The normal draw is clipped at ``SIZE_Z_MAX`` so that at eICU's scale (208 hospitals) the
    largest holds about 4 % of stays, as eICU's largest does (3.5 %), instead of a chance 15 %.
    """
    z = np.clip(rng.normal(0.0, 1.0, hospitals), -SIZE_Z_MIN, SIZE_Z_MAX)
    shares = np.exp(SIZE_SIGMA * z)
    spare = stays - hospitals
    exact = shares / shares.sum() * spare
    sizes = np.floor(exact).astype(np.int64)
    remainder = spare - int(sizes.sum())
    sizes[np.argsort(exact - sizes)[::-1][:remainder]] += 1
    return np.asarray(sizes + 1, dtype=np.int64)


def synthesise(
    out: Path, *, hospitals: int, stays: int, seed: int, overwrite: bool = False
) -> TwinSummary:
    """Write a twin of ``hospitals`` hospitals and ``stays`` unit stays to ``out``."""
    if hospitals < 1:
        raise ConfigError(f"--hospitals {hospitals}: must be at least 1")
    if stays < hospitals:
        raise ConfigError(f"--stays {stays} < --hospitals {hospitals}: each needs one stay")
    _prepare_folder(out, overwrite=overwrite)
    rng = np.random.default_rng(seed)
    hosp = _draw_hospitals(rng, hospitals, stays)
    frame = _draw_stays(rng, hosp)
    _write_tables(rng, out, hosp, frame)
    y = frame["died"].to_numpy()
    h = frame["h"].to_numpy()
    sizes = np.bincount(h, minlength=hospitals)
    deaths_by_h = np.bincount(h, weights=y.astype(np.float64), minlength=hospitals)
    return TwinSummary(
        out=out,
        hospitals=hospitals,
        stays=stays,
        deaths=int(y.sum()),
        sizes=tuple(int(s) for s in sizes),
        hospital_mortality=tuple(float(m) for m in deaths_by_h / np.maximum(sizes, 1)),
    )


def _prepare_folder(out: Path, *, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder; choose another path")
    if out.is_dir() and any(out.iterdir()):
        foreign = [p.name for p in out.iterdir() if p.name not in TWIN_FILES]
        if not overwrite or foreign:
            raise ConfigError(
                f"--out {out}: folder is not empty; choose a new one"
                + ("" if foreign else " or pass --overwrite")
            )
    out.mkdir(parents=True, exist_ok=True)


def _draw_hospitals(rng: np.random.Generator, hospitals: int, stays: int) -> pd.DataFrame:
    """Per-hospital parameters: identity, size, region, beds, case mix, missingness, effect."""
    id_pool = np.arange(56, 56 + max(404, 2 * hospitals))
    hospital_id = np.sort(rng.choice(id_pool, hospitals, replace=False))
    size = hospital_sizes(rng, hospitals, stays)
    region = choose(rng, REGION_P, hospitals)
    size_score = np.log(size) + rng.normal(0.0, 0.6, hospitals)
    quantiles = np.quantile(size_score, [0.25, 0.6, 0.82]) if hospitals > 1 else np.zeros(3)
    beds = np.searchsorted(quantiles, size_score).astype(np.int64)
    beds_missing = rng.random(hospitals) < 0.12
    teaching = rng.random(hospitals) < np.array([0.02, 0.05, 0.15, 0.45])[beds]
    unit_p = np.stack([rng.dirichlet(UNIT_P * c) for c in rng.uniform(4, 30, hospitals)])
    small = beds == VOCABULARY["numbedscategory"].index("<100")  # they run one mixed ICU
    unit_p[small] = 0.3 * unit_p[small] + 0.7 * np.eye(len(UNIT_P))[UnitType.MED_SURG]
    return pd.DataFrame(
        {
            "hospitalid": hospital_id,
            "size": size,
            "region": region,
            "beds": np.where(beds_missing, -1, beds),
            "teaching": teaching,
            "surgical_share": rng.beta(2.0, 6.0, hospitals) + 0.05 * teaching,
            "age_shift": REGION_AGE_SHIFT[region] + rng.normal(0.0, 2.5, hospitals),
            "missing_shift": rng.normal(0.0, 0.8, hospitals),
            "no_aps_rate": rng.beta(1.5, 20.0, hospitals),
            "effect": rng.normal(0.0, 0.45, hospitals),
            **{f"unit_p{k}": unit_p[:, k] for k in range(len(UNIT_P))},
        }
    )


def _draw_stays(rng: np.random.Generator, hosp: pd.DataFrame) -> pd.DataFrame:
    """Every unit stay: case mix, physiology, true risk, outcome (sorted by hospital)."""
    h = np.repeat(np.arange(len(hosp)), hosp["size"].to_numpy())
    n = h.shape[0]
    hp = {c: hosp[c].to_numpy()[h] for c in hosp.columns}
    unit_probs = np.stack([hosp[f"unit_p{k}"].to_numpy() for k in range(len(UNIT_P))], axis=1)
    unit = choose(rng, unit_probs[h])
    surgical = rng.random(n) < np.clip(
        hp["surgical_share"] + 0.35 * np.isin(unit, SURGICAL_UNITS), 0, 1
    )
    dx_p = np.where(surgical[:, None], DX_SURGICAL, DX_MEDICAL)
    for unit_type, (group, boost) in UNIT_DX_BOOST.items():
        rows = unit == unit_type
        dx_p[rows, group] *= boost
    dx = choose(rng, dx_p + 1e-9)

    male = rng.random(n) < 0.55
    age = np.clip(rng.normal(64.0 + hp["age_shift"] - 6.0 * (dx == D.OVERDOSE), 16.0), 15, 100)
    age = np.floor(age)
    severity = rng.normal(0.0, 1.0, n) + DX_SEVERITY[dx] + 0.2 * (age - 64) / 16 - 0.3 * surgical
    s = severity
    up = np.where(rng.random(n) < 0.8, 1.0, -1.0)
    p: dict[str, F64] = {}
    p["heartrate"] = np.clip(92 + 13 * s * up + rng.normal(0, 15, n), 25, 215).round()
    p["meanbp"] = np.clip(80 - 11 * s * up + rng.normal(0, 17, n), 40, 200).round()
    p["respiratoryrate"] = np.clip(22 + 5 * s + rng.normal(0, 7, n), 4, 60).round()
    p["temperature"] = np.clip(36.8 + 0.5 * s * up + rng.normal(0, 0.7, n), 30, 41.5).round(1)
    p["wbc"] = np.clip(np.exp(rng.normal(np.log(10.5) + 0.2 * s * up, 0.45)), 0.1, 90).round(1)
    p["sodium"] = np.clip(139 + 1.5 * s * up + rng.normal(0, 4, n), 105, 175).round()
    p["creatinine"] = np.clip(np.exp(rng.normal(np.log(1.1) + 0.3 * s, 0.55)), 0.1, 20).round(2)
    p["bun"] = np.clip(p["creatinine"] * 17 * np.exp(rng.normal(0, 0.3, n)), 2, 200).round()
    glucose_mu = np.log(150) + 0.1 * s + 0.9 * (dx == D.METABOLIC)
    p["glucose"] = np.clip(np.exp(rng.normal(glucose_mu, 0.35)), 20, 1200).round()
    p["hematocrit"] = np.clip(
        34 - 1.5 * s - 5 * (dx == D.GI_BLEED) + rng.normal(0, 5, n), 12, 60
    ).round(1)
    p["albumin"] = np.clip(3.0 - 0.35 * s + rng.normal(0, 0.55, n), 1.0, 5.5).round(1)
    p["bilirubin"] = np.clip(np.exp(rng.normal(np.log(0.8) + 0.25 * s, 0.8)), 0.1, 35).round(1)
    p["ph"] = np.clip(7.37 - 0.05 * s + rng.normal(0, 0.06, n), 6.8, 7.7).round(2)
    p["pco2"] = np.clip(41 + rng.normal(0, 9, n), 10, 110).round(1)
    p["pao2"] = np.clip(np.exp(rng.normal(np.log(110), 0.4, n)) - 8 * s, 30, 550).round()
    p["urine"] = np.clip(np.exp(rng.normal(np.log(1700) - 0.45 * s, 0.6)), 0, 9000).round(1)

    impaired = rng.random(n) < sigmoid(-1.5 + 1.0 * s + 1.5 * np.isin(dx, UNCONSCIOUS_DX))
    deficit = np.where(impaired, np.clip(rng.gamma(2.0, 2.0 + np.maximum(s, 0), n), 1, 12), 0)
    eyes = np.clip(4 - np.round(deficit * 3 / 12 + rng.normal(0, 0.3, n)), 1, 4)
    motor = np.clip(6 - np.round(deficit * 5 / 12 + rng.normal(0, 0.3, n)), 1, 6)
    verbal = np.clip(5 - np.round(deficit * 4 / 12 + rng.normal(0, 0.3, n)), 1, 5)
    gcs = eyes + motor + verbal
    vent = rng.random(n) < sigmoid(-2.0 + 1.0 * s + 1.5 * (gcs < 9) + 0.8 * surgical)
    p["fio2"] = np.where(vent, rng.uniform(30, 100, n), rng.uniform(21, 50, n)).round()
    dialysis = rng.random(n) < sigmoid(-4.5 + 1.2 * np.log(p["creatinine"]))

    source = _admission_source(rng, surgical)
    lin = (
        hp["effect"]
        + 0.032 * (age - 64)
        + 0.16 * (15 - gcs)
        + 0.45 * vent
        + 0.013 * np.abs(p["heartrate"] - 85)
        + 0.016 * np.abs(p["meanbp"] - 85)
        + 0.035 * np.abs(p["respiratoryrate"] - 18)
        + 0.45 * np.abs(p["temperature"] - 37)
        + 0.35 * np.log(p["creatinine"])
        + 0.006 * p["bun"]
        + 0.05 * np.abs(p["sodium"] - 140)
        + 0.02 * np.abs(p["wbc"] - 9)
        - 0.35 * (p["albumin"] - 3)
        + 2.5 * np.maximum(7.38 - p["ph"], 0)
        + 0.25 * np.log(p["bilirubin"])
        + DX_RISK[dx]
        + 0.35 * (source == "Floor")
        + 0.3 * (source == "Other Hospital")
        - 0.3 * surgical
    )
    intercept = _calibrate(lin, TARGET_MORTALITY)
    risk = sigmoid(lin + intercept)
    died = rng.random(n) < risk

    frame = pd.DataFrame(
        {
            "h": h,
            "unit": unit,
            "surgical": surgical,
            "dx": dx,
            "male": male,
            "age": age,
            "severity": severity,
            "eyes": eyes,
            "motor": motor,
            "verbal": verbal,
            "meds": (vent & (rng.random(n) < 0.12)).astype(np.int64),
            "vent": vent.astype(np.int64),
            "intubated": (vent & (rng.random(n) < 0.6)).astype(np.int64),
            "dialysis": dialysis.astype(np.int64),
            "source": source,
            "risk": risk,
            "apache_logit": 0.85 * (lin - hp["effect"]) + intercept + rng.normal(0, 0.55, n),
            "died": died,
            **p,
        }
    )
    _mask_labs(rng, frame, hp["missing_shift"], s)
    return _add_later_unit_stays(rng, frame)


def _admission_source(rng: np.random.Generator, surgical: BoolArray) -> npt.NDArray[np.object_]:
    medical_names = np.array([name for name, _ in MEDICAL_SOURCES], dtype=object)
    surgical_names = np.array([name for name, _ in SURGICAL_SOURCES], dtype=object)
    medical = medical_names[choose(rng, np.array([w for _, w in MEDICAL_SOURCES]), len(surgical))]
    surgery = surgical_names[choose(rng, np.array([w for _, w in SURGICAL_SOURCES]), len(surgical))]
    source = np.where(surgical, surgery, medical)
    source[rng.random(len(surgical)) < 0.01] = None
    return source


def _calibrate(lin: F64, target: float) -> float:
    """The intercept that makes the mean risk ``target`` (bisection; mean risk rises with it)."""
    low, high = -30.0, 30.0
    for _ in range(60):
        mid = (low + high) / 2
        if float(sigmoid(lin + mid).mean()) < target:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _mask_labs(rng: np.random.Generator, frame: pd.DataFrame, shift: F64, s: F64) -> None:
    """Hide labs at rates that differ by hospital; sicker patients are measured more often."""
    n = len(frame)
    gas_hidden = rng.random(n) < sigmoid(
        logit(np.array(0.8)) + shift - 0.5 * s - 1.0 * frame["vent"]
    )
    for lab, rate in LAB_MISSING.items():
        if lab in BLOOD_GAS:
            hidden = gas_hidden
        else:
            lab_shift = rng.normal(0.0, 0.4)
            hidden = rng.random(n) < sigmoid(logit(np.array(rate)) + shift + lab_shift - 0.4 * s)
        frame[lab] = np.where(hidden, -1.0, frame[lab].to_numpy())
    gcs_hidden = rng.random(n) < 0.04
    for column in ("eyes", "motor", "verbal", "meds"):
        frame[column] = np.where(gcs_hidden, -1, frame[column].to_numpy()).astype(np.int64)


def _add_later_unit_stays(rng: np.random.Generator, frame: pd.DataFrame) -> pd.DataFrame:
    """Turn some stays into second unit stays of the previous stay's admission (same hospital)."""
    h = frame["h"].to_numpy()
    n = len(frame)
    candidate = rng.random(n) < LATER_UNIT_STAY_RATE
    candidate[0] = False
    candidate[1:] &= h[1:] == h[:-1]
    later = candidate.copy()
    later[1:] &= ~candidate[:-1]
    parent = np.arange(n)
    parent[later] -= 1
    frame["admission"] = parent  # index of the stay that opened the admission
    frame["later"] = later
    for column in ("male", "age", "died", "risk"):
        frame[column] = frame[column].to_numpy()[parent]
    return frame


def _write_tables(
    rng: np.random.Generator, out: Path, hosp: pd.DataFrame, frame: pd.DataFrame
) -> None:
    """Shuffle stays, give them eICU identifiers, and write the five tables + side file."""
    frame = frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)
    n = len(frame)
    stay_id = 141_000 + np.cumsum(rng.integers(1, 40, n))
    admission_rank = pd.Series(frame["admission"]).rank(method="dense").to_numpy(np.int64)
    system_id = 128_000 + admission_rank * 3
    frame["patientunitstayid"] = stay_id
    hospitalid = hosp["hospitalid"].to_numpy()[frame["h"].to_numpy()]
    _write(out / "hospital.csv.gz", "hospital", _hospital_table(hosp))
    patient = _patient_table(rng, frame, hosp, hospitalid, system_id)
    _write(out / "patient.csv.gz", "patient", patient)
    has_aps = rng.random(n) >= hosp["no_aps_rate"].to_numpy()[frame["h"].to_numpy()]
    aps = frame.loc[has_aps]
    _write(out / "apacheApsVar.csv.gz", "apacheApsVar", _aps_table(rng, aps))
    _write(out / "apachePatientResult.csv.gz", "apachePatientResult", _result_table(rng, aps))
    _write(out / "apachePredVar.csv.gz", "apachePredVar", _predictor_table(rng, aps))
    risk = pa.table({"patientunitstayid": stay_id, "truerisk": frame["risk"].to_numpy()})
    _write_csv(out / TRUE_RISK_FILE, risk)


def _hospital_table(hosp: pd.DataFrame) -> dict[str, object]:
    beds = np.array((*VOCABULARY["numbedscategory"], None), dtype=object)
    regions = np.array((*REGIONS, None), dtype=object)
    return {
        "hospitalid": hosp["hospitalid"].to_numpy(),
        "numbedscategory": beds[hosp["beds"].to_numpy()],
        "teachingstatus": np.where(hosp["teaching"].to_numpy(), "t", "f"),
        "region": regions[hosp["region"].to_numpy()],
    }


def _clock(rng: np.random.Generator, n: int) -> pd.Series:
    """Random ``HH:MM:SS`` text, as eICU writes its ``*time24`` columns."""
    minutes = pd.Series(rng.integers(0, 24 * 60, n))
    hours = (minutes // 60).astype("string").str.zfill(2)
    return hours + ":" + (minutes % 60).astype("string").str.zfill(2) + ":00"


def _patient_table(
    rng: np.random.Generator,
    frame: pd.DataFrame,
    hosp: pd.DataFrame,
    hospitalid: I64,
    system_id: I64,
) -> dict[str, object]:
    n = len(frame)
    h = frame["h"].to_numpy()
    region = hosp["region"].to_numpy()[h]
    later = frame["later"].to_numpy()
    died = frame["died"].to_numpy()
    age_num = frame["age"].to_numpy().astype(np.int64)
    age = pd.Series(age_num).astype("string").where(age_num <= 89, "> 89")
    unknown = rng.random(n) < UNKNOWN_OUTCOME_RATE
    status = pd.Series(np.where(died, "Expired", "Alive"), dtype="string").where(~unknown)
    unit_status = np.where(died & (rng.random(n) < 0.6), "Expired", "Alive")
    ethnicity = np.array(VOCABULARY["ethnicity"], dtype=object)[choose(rng, ETHNICITY_P[region])]
    ethnicity[rng.random(n) < 0.015] = None
    dx_group = np.array(DX_GROUPS)[frame["dx"].to_numpy()]
    dx_text = np.empty(n, dtype=object)
    for group, texts in DIAGNOSES.items():  # one pass per diagnosis group, not per stay
        rows = dx_group == group
        dx_text[rows] = np.array(texts, dtype=object)[rng.integers(0, len(texts), rows.sum())]
    dx_text[later] = None
    weight = np.exp(rng.normal(np.log(80) + 0.1 * frame["male"].to_numpy(), 0.25)).round(1)
    weight[rng.random(n) < 0.03] = np.nan
    height = (162 + 14 * frame["male"].to_numpy() + rng.normal(0, 7.5, n)).round(1)
    height[rng.random(n) < 0.03] = np.nan
    unit_los = np.exp(rng.normal(np.log(2200), 0.8, n)).round().astype(np.int64)
    hosp_offset = unit_los + np.exp(rng.normal(np.log(4000), 0.9, n)).round().astype(np.int64)
    later_source = np.array(["Step-Down Unit (SDU)", "Floor", "ICU to SDU"], dtype=object)
    source = np.where(later, later_source[rng.integers(0, 3, n)], frame["source"].to_numpy())
    stay_type = np.where(later, np.where(rng.random(n) < 0.7, "stepdown/other", "readmit"), "admit")
    locations = np.array(
        ["Home", "Skilled Nursing Facility", "Other Hospital", "Rehabilitation", "Other"],
        dtype=object,
    )
    discharge = np.where(
        died, "Death", locations[choose(rng, np.array([0.62, 0.15, 0.08, 0.07, 0.08]), n)]
    )
    discharge = pd.Series(discharge, dtype="string").where(~unknown)
    unit_discharge = np.where(
        unit_status == "Expired",
        "Death",
        np.where(rng.random(n) < 0.6, "Floor", "Step-Down Unit (SDU)"),
    )
    return {
        "patientunitstayid": frame["patientunitstayid"].to_numpy(),
        "patienthealthsystemstayid": system_id,
        "gender": np.where(frame["male"].to_numpy(), "Male", "Female"),
        "age": age,
        "ethnicity": ethnicity,
        "hospitalid": hospitalid,
        "wardid": hospitalid * 10 + frame["unit"].to_numpy(),
        "apacheadmissiondx": dx_text,
        "admissionheight": height,
        "hospitaladmittime24": _clock(rng, n),
        "hospitaladmitoffset": -rng.integers(0, 3000, n),
        "hospitaladmitsource": pd.Series(source, dtype="string").where(rng.random(n) > 0.25),
        "hospitaldischargeyear": rng.integers(2014, 2016, n),
        "hospitaldischargetime24": _clock(rng, n),
        "hospitaldischargeoffset": hosp_offset,
        "hospitaldischargelocation": discharge,
        "hospitaldischargestatus": status,
        "unittype": np.array(VOCABULARY["unittype"], dtype=object)[frame["unit"].to_numpy()],
        "unitadmittime24": _clock(rng, n),
        "unitadmitsource": source,
        "unitvisitnumber": np.where(later, 2, 1),
        "unitstaytype": stay_type,
        "admissionweight": weight,
        "dischargeweight": np.where(
            rng.random(n) < 0.4, np.nan, weight + rng.normal(0, 2, n).round(1)
        ),
        "unitdischargetime24": _clock(rng, n),
        "unitdischargeoffset": unit_los,
        "unitdischargelocation": unit_discharge,
        "unitdischargestatus": unit_status,
        "uniquepid": "0"
        + pd.Series(rng.integers(10, 35, n)).astype("string")
        + "-"
        + pd.Series(system_id).astype("string"),
    }


def _aps_table(rng: np.random.Generator, aps: pd.DataFrame) -> dict[str, object]:
    m = len(aps)
    table: dict[str, object] = {
        "apacheapsvarid": rng.permutation(np.arange(1, m + 1)) * 7 + 1000,
        "patientunitstayid": aps["patientunitstayid"].to_numpy(),
    }
    for column in TABLE_COLUMNS["apacheApsVar"]:
        if column not in table:
            table[column] = aps[column].to_numpy()
    return table


def _result_table(rng: np.random.Generator, aps: pd.DataFrame) -> dict[str, object]:
    """Two rows per stay with an APS row (APACHE IV and IVa), IVa being the yardstick."""
    m = len(aps)
    iva = sigmoid(aps["apache_logit"].to_numpy())
    iv = sigmoid(logit(iva) + rng.normal(0.05, 0.1, m))
    no_prediction = rng.random(m) < APACHE_MISSING_RATE
    died = aps["died"].to_numpy()
    unit_los = np.exp(rng.normal(np.log(1.6), 0.8, m)).round(4)
    hosp_los = (unit_los + np.exp(rng.normal(np.log(3.5), 0.8, m))).round(4)
    aps_score = np.clip(40 + 22 * aps["severity"].to_numpy() + rng.normal(0, 8, m), 0, 200)
    vent = aps["vent"].to_numpy().astype(bool)
    vent_days = np.where(vent, np.exp(rng.normal(0.5, 0.8, m)).round(2), np.nan)
    specialities = np.array(
        ["internal medicine", "hospitalist", "critical care medicine (CCM)"], dtype=object
    )
    categories = np.array(["Unknown", "I", "II", "III", "IV"], dtype=object)
    one = {
        "apachepatientresultsid": np.zeros(m, dtype=np.int64),
        "patientunitstayid": aps["patientunitstayid"].to_numpy(),
        "physicianspeciality": specialities[rng.integers(0, 3, m)],
        "physicianinterventioncategory": categories[rng.integers(0, 5, m)],
        "acutephysiologyscore": aps_score.round().astype(np.int64),
        "apachescore": (aps_score + np.maximum(aps["age"].to_numpy() - 44, 0) // 2)
        .round()
        .astype(np.int64),
        "apacheversion": np.full(m, "IVa", dtype=object),
        "predictedicumortality": np.zeros(m),
        "actualicumortality": np.where(died & (rng.random(m) < 0.6), "EXPIRED", "ALIVE"),
        "predictediculos": np.exp(rng.normal(np.log(2.5), 0.4, m)),
        "actualiculos": unit_los,
        "predictedhospitalmortality": np.zeros(m),
        "actualhospitalmortality": np.where(died, "EXPIRED", "ALIVE"),
        "predictedhospitallos": np.exp(rng.normal(np.log(7), 0.4, m)),
        "actualhospitallos": hosp_los,
        "preopmi": np.zeros(m, dtype=np.int64),
        "preopcardiaccath": np.zeros(m, dtype=np.int64),
        "ptcawithin24h": np.zeros(m, dtype=np.int64),
        "unabridgedunitlos": unit_los,
        "unabridgedhosplos": hosp_los,
        "actualventdays": vent_days,
        "predventdays": np.where(vent, np.exp(rng.normal(0.6, 0.4, m)).round(2), np.nan),
        "unabridgedactualventdays": vent_days,
    }
    rows: dict[str, object] = {}
    for column, values in one.items():
        rows[column] = np.concatenate([values, values])
    hospital_pred = np.concatenate(
        [np.where(no_prediction, -1.0, iv), np.where(no_prediction, -1.0, iva)]
    )
    rows["predictedhospitalmortality"] = hospital_pred
    rows["predictedicumortality"] = np.where(hospital_pred < 0, -1.0, hospital_pred * 0.6)
    rows["apacheversion"] = np.concatenate(
        [np.full(m, "IV", dtype=object), np.full(m, "IVa", dtype=object)]
    )
    rows["apachepatientresultsid"] = rng.permutation(np.arange(1, 2 * m + 1)) + 500
    return rows


ADMIT_DIAGNOSIS_CODE: dict[DxGroup, str] = {
    D.SEPSIS: "SEPSISPULM",
    D.CARDIAC_ARREST: "CARDARREST",
    D.CARDIAC_SURGERY: "CABGALONE",
    D.CARDIAC_MEDICAL: "CHF",
    D.NEURO: "CVA",
    D.RESPIRATORY: "PNEUMBACT",
    D.GI_BLEED: "GIBLEED",
    D.OVERDOSE: "ODSEDHYP",
    D.METABOLIC: "DKA",
    D.TRAUMA: "HIPFX",
    D.SURGICAL_OTHER: "CAROTEND",
}
"""``apachePredVar.admitdiagnosis`` per group; an operative admission gets eICU's ``S-``."""
CHRONIC_HEALTH_RATE = {
    "aids": 0.001,
    "hepaticfailure": 0.013,
    "lymphoma": 0.006,
    "metastaticcancer": 0.022,
    "leukemia": 0.01,
    "immunosuppression": 0.026,
    "cirrhosis": 0.014,
    "diabetes": 0.2,
}
"""Prevalences near the eICU demo's."""


def _predictor_table(rng: np.random.Generator, aps: pd.DataFrame) -> dict[str, object]:
    """``apachePredVar`` for the stays with an APS row, drawn after everything else.

    Its admission and chronic health items follow the case mix but do not enter the true
    risk: they are there so that the ``admission`` features are built from real columns,
    and the other tables are the same as a twin drawn without them. ``diedinhospital`` and
    the other outcome columns are written, as eICU does; the reader never reads them.
    """
    m = len(aps)
    dx = aps["dx"].to_numpy()
    surgical = aps["surgical"].to_numpy().astype(bool)
    vent = aps["vent"].to_numpy()
    codes = np.array([ADMIT_DIAGNOSIS_CODE[group] for group in DxGroup], dtype=object)[dx]
    admit_dx = np.where(surgical, "S-" + codes.astype(str), codes.astype(str)).astype(object)
    admit_dx[aps["later"].to_numpy()] = None
    cardiac = dx == D.CARDIAC_MEDICAL
    acute_mi = cardiac & (rng.random(m) < 0.2)
    table: dict[str, object] = {
        "apachepredvarid": rng.permutation(np.arange(1, m + 1)) * 3 + 2000,
        "patientunitstayid": aps["patientunitstayid"].to_numpy(),
        "sicuday": np.ones(m, dtype=np.int64),
        "gender": aps["male"].to_numpy().astype(np.int64),
        "admitsource": np.where(surgical, 2, 1),
        "graftcount": np.where(dx == D.CARDIAC_SURGERY, rng.integers(1, 6, m), 3),
        "age": aps["age"].to_numpy().astype(np.float64),
        "admitdiagnosis": admit_dx,
        "thrombolytics": (cardiac & (rng.random(m) < 0.1)).astype(np.int64),
        "diedinhospital": aps["died"].to_numpy().astype(np.int64),
        "electivesurgery": np.where(surgical, (rng.random(m) < 0.85).astype(np.float64), np.nan),
        "activetx": (rng.random(m) < sigmoid(aps["severity"].to_numpy())).astype(np.int64),
        "readmit": (rng.random(m) < 0.04).astype(np.int64),
        "ima": ((dx == D.CARDIAC_SURGERY) & (rng.random(m) < 0.5)).astype(np.int64),
        "midur": (cardiac & (rng.random(m) < 0.05)).astype(np.int64),
        "ventday1": vent,
        "oobventday1": vent,
        "oobintubday1": aps["intubated"].to_numpy(),
        "amilocation": np.where(acute_mi, rng.integers(1, 7, m), -1),
        "ejectfx": np.full(m, -1.0),
        "var03hspxlos": np.exp(rng.normal(np.log(7), 0.8, m)).round(2),
        "dischargelocation": np.where(aps["died"].to_numpy(), 6, 4),
        "visitnumber": np.where(aps["later"].to_numpy(), 2, 1),
    }
    for column, rate in CHRONIC_HEALTH_RATE.items():
        table[column] = (rng.random(m) < rate).astype(np.int64)
    for column in ("meds", "verbal", "motor", "eyes", "pao2", "fio2", "creatinine"):
        table[column] = aps[column].to_numpy()
        table[f"day1{column}"] = aps[column].to_numpy()
    for column in TABLE_COLUMNS["apachePredVar"]:
        table.setdefault(column, np.zeros(m, dtype=np.int64))
    return table


def _write(path: Path, table_name: str, columns: dict[str, object]) -> None:
    """Write one table with eICU's column order and types (a wrong type fails here, not later)."""
    schema = pa.schema([(name, kind) for name, kind in TABLE_COLUMNS[table_name].items()])
    arrays = [
        pa.array(columns[name], type=schema.field(name).type, from_pandas=True)
        for name in schema.names
    ]
    _write_csv(path, pa.Table.from_arrays(arrays, schema=schema))


def _write_csv(path: Path, table: pa.Table) -> None:
    """CSV text by Arrow, gzip at level 1: higher levels cost far more time for little less disk
    (``python -m bench --only data_bench`` times synthesis)."""
    buffer = pa.BufferOutputStream()
    pacsv.write_csv(table, buffer, write_options=pacsv.WriteOptions(quoting_style="needed"))
    with gzip.open(path, "wb", compresslevel=1) as stream:
        stream.write(buffer.getvalue().to_pybytes())

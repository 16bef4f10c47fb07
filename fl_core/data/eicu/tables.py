"""The five eICU-CRD v2.0 tables fedsilo reads, as PhysioNet distributes them.

One description of the layout serves both directions: the reader checks files against it and
the synthetic twin writes exactly these columns in this order, so there is one code path for
real and synthetic data. Types are Arrow types; text columns stay text (``age`` is text in
eICU because of the ``"> 89"`` code).
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from fl_core.errors import ConfigError

_I = pa.int64()
_F = pa.float64()
_S = pa.string()

TABLE_COLUMNS: dict[str, dict[str, pa.DataType]] = {
    "patient": {
        "patientunitstayid": _I,
        "patienthealthsystemstayid": _I,
        "gender": _S,
        "age": _S,
        "ethnicity": _S,
        "hospitalid": _I,
        "wardid": _I,
        "apacheadmissiondx": _S,
        "admissionheight": _F,
        "hospitaladmittime24": _S,
        "hospitaladmitoffset": _I,
        "hospitaladmitsource": _S,
        "hospitaldischargeyear": _I,
        "hospitaldischargetime24": _S,
        "hospitaldischargeoffset": _I,
        "hospitaldischargelocation": _S,
        "hospitaldischargestatus": _S,
        "unittype": _S,
        "unitadmittime24": _S,
        "unitadmitsource": _S,
        "unitvisitnumber": _I,
        "unitstaytype": _S,
        "admissionweight": _F,
        "dischargeweight": _F,
        "unitdischargetime24": _S,
        "unitdischargeoffset": _I,
        "unitdischargelocation": _S,
        "unitdischargestatus": _S,
        "uniquepid": _S,
    },
    "hospital": {
        "hospitalid": _I,
        "numbedscategory": _S,
        "teachingstatus": _S,
        "region": _S,
    },
    "apacheApsVar": {
        "apacheapsvarid": _I,
        "patientunitstayid": _I,
        "intubated": _I,
        "vent": _I,
        "dialysis": _I,
        "eyes": _I,
        "motor": _I,
        "verbal": _I,
        "meds": _I,
        "urine": _F,
        "wbc": _F,
        "temperature": _F,
        "respiratoryrate": _F,
        "sodium": _F,
        "heartrate": _F,
        "meanbp": _F,
        "ph": _F,
        "hematocrit": _F,
        "creatinine": _F,
        "albumin": _F,
        "pao2": _F,
        "pco2": _F,
        "bun": _F,
        "glucose": _F,
        "bilirubin": _F,
        "fio2": _F,
    },
    "apachePatientResult": {
        "apachepatientresultsid": _I,
        "patientunitstayid": _I,
        "physicianspeciality": _S,
        "physicianinterventioncategory": _S,
        "acutephysiologyscore": _I,
        "apachescore": _I,
        "apacheversion": _S,
        "predictedicumortality": _F,
        "actualicumortality": _S,
        "predictediculos": _F,
        "actualiculos": _F,
        "predictedhospitalmortality": _F,
        "actualhospitalmortality": _S,
        "predictedhospitallos": _F,
        "actualhospitallos": _F,
        "preopmi": _I,
        "preopcardiaccath": _I,
        "ptcawithin24h": _I,
        "unabridgedunitlos": _F,
        "unabridgedhosplos": _F,
        "actualventdays": _F,
        "predventdays": _F,
        "unabridgedactualventdays": _F,
    },
    "apachePredVar": {
        "apachepredvarid": _I,
        "patientunitstayid": _I,
        "sicuday": _I,
        "saps3day1": _I,
        "saps3today": _I,
        "saps3yesterday": _I,
        "gender": _I,
        "teachtype": _I,
        "region": _I,
        "bedcount": _I,
        "admitsource": _I,
        "graftcount": _I,
        "meds": _I,
        "verbal": _I,
        "motor": _I,
        "eyes": _I,
        "age": _F,
        "admitdiagnosis": _S,
        "thrombolytics": _I,
        "diedinhospital": _I,
        "aids": _I,
        "hepaticfailure": _I,
        "lymphoma": _I,
        "metastaticcancer": _I,
        "leukemia": _I,
        "immunosuppression": _I,
        "cirrhosis": _I,
        "electivesurgery": _F,
        "activetx": _I,
        "readmit": _I,
        "ima": _I,
        "midur": _I,
        "ventday1": _I,
        "oobventday1": _I,
        "oobintubday1": _I,
        "diabetes": _I,
        "managementsystem": _I,
        "var03hspxlos": _F,
        "pao2": _F,
        "fio2": _F,
        "ejectfx": _F,
        "creatinine": _F,
        "dischargelocation": _I,
        "visitnumber": _I,
        "amilocation": _I,
        "day1meds": _I,
        "day1verbal": _I,
        "day1motor": _I,
        "day1eyes": _I,
        "day1pao2": _F,
        "day1fio2": _F,
    },
}
"""Every column of the five tables, in PhysioNet's order, with the type fedsilo reads it as."""

# Physiology is read as float: APACHE writes some as integers, and -1 means "not measured".
_READ_AS_FLOAT = {"respiratoryrate", "heartrate", "meanbp", "glucose", "fio2"}

USED_COLUMNS: dict[str, tuple[str, ...]] = {
    "patient": (
        "patientunitstayid",
        "patienthealthsystemstayid",
        "uniquepid",
        "hospitalid",
        "age",
        "gender",
        "ethnicity",
        "apacheadmissiondx",
        "unittype",
        "unitadmitsource",
        "unitvisitnumber",
        "admissionweight",
        "admissionheight",
        "hospitaldischargestatus",
    ),
    "hospital": ("hospitalid", "numbedscategory", "teachingstatus", "region"),
    "apacheApsVar": tuple(TABLE_COLUMNS["apacheApsVar"])[1:],
    "apachePatientResult": ("patientunitstayid", "apacheversion", "predictedhospitalmortality"),
    "apachePredVar": (
        "patientunitstayid",
        "admitdiagnosis",
        "electivesurgery",
        "thrombolytics",
        "amilocation",
        "midur",
        "ima",
        "readmit",
        "activetx",
        "aids",
        "hepaticfailure",
        "lymphoma",
        "metastaticcancer",
        "leukemia",
        "immunosuppression",
        "cirrhosis",
        "diabetes",
    ),
}
"""The columns the cohort builder needs; a file lacking one of these is refused."""

OUTCOME_COLUMNS: dict[str, tuple[str, ...]] = {
    "patient": (
        "hospitaldischargestatus",
        "hospitaldischargelocation",
        "hospitaldischargeoffset",
        "unitdischargestatus",
        "unitdischargelocation",
        "unitdischargeoffset",
        "dischargeweight",
    ),
    "apachePatientResult": (
        "actualicumortality",
        "actualhospitalmortality",
        "actualiculos",
        "actualhospitallos",
        "unabridgedunitlos",
        "unabridgedhosplos",
        "actualventdays",
        "unabridgedactualventdays",
    ),
    "apachePredVar": ("diedinhospital", "dischargelocation", "var03hspxlos", "visitnumber"),
}
"""Columns written after the stay ended (the outcome, or things that follow from it). Only the
label is read from one of them (``hospitaldischargestatus``); no feature may come from any."""

TRUE_RISK_FILE = "fedsilo_true_risk.csv.gz"
"""Side file of the synthetic twin (not an eICU table): ``patientunitstayid,truerisk``."""

_COLUMN_NUMBER = re.compile(r"column #(\d+)")


def find_table(eicu_dir: Path, table: str) -> Path:
    """The file of one table: ``<table>.csv`` or ``<table>.csv.gz`` (PhysioNet ships both)."""
    for suffix in (".csv.gz", ".csv"):
        path = eicu_dir / f"{table}{suffix}"
        if path.is_file():
            return path
    raise ConfigError(
        f"{eicu_dir}: table {table!r} not found (expected {table}.csv or {table}.csv.gz); "
        "point --eicu-dir at the folder holding the eICU-CRD v2.0 CSV files"
    )


def read_header(path: Path) -> list[str]:
    """Column names of a CSV file (gzip detected from the name), without reading the body."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as stream:
            line = stream.readline()
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise ConfigError(f"{path}: cannot read the file ({err}); is it a CSV file?") from err
    if not line.strip():
        raise ConfigError(f"{path}: the file is empty; expected a CSV header line")
    return [name.strip().strip('"') for name in line.rstrip("\r\n").split(",")]


def read_table(eicu_dir: Path, table: str, columns: tuple[str, ...] | None = None) -> pa.Table:
    """Read the named columns of one table with fixed types; missing column -> ``ConfigError``.

    Header names are matched case-insensitively (PhysioNet's are lower case) and the result
    uses the lower-case names. Empty fields become nulls.
    """
    path = find_table(eicu_dir, table)
    wanted = columns if columns is not None else USED_COLUMNS[table]
    header = read_header(path)
    by_lower = {name.lower(): name for name in header}
    missing = [name for name in wanted if name not in by_lower]
    if missing:
        raise ConfigError(
            f"{path}: column(s) {', '.join(missing)} missing; the eICU-CRD v2.0 {table} table "
            "has them (was the file edited or truncated?)"
        )
    types = {
        by_lower[name]: (pa.float64() if name in _READ_AS_FLOAT else TABLE_COLUMNS[table][name])
        for name in wanted
    }
    convert = pacsv.ConvertOptions(
        include_columns=[by_lower[name] for name in wanted],
        column_types=types,
        strings_can_be_null=True,
        null_values=[""],
    )
    try:
        data = pacsv.read_csv(str(path), convert_options=convert)
    except (OSError, pa.ArrowException) as err:
        raise ConfigError(f"{path}: {_describe_arrow_error(str(err), header)}") from err
    return data.rename_columns(list(wanted))


def _describe_arrow_error(message: str, header: list[str]) -> str:
    """Name the column in Arrow's "column #N" messages so the user knows where to look."""
    match = _COLUMN_NUMBER.search(message)
    if match and int(match.group(1)) < len(header):
        return f"column {header[int(match.group(1))]!r} is unreadable ({message.strip()})"
    return f"cannot read the file ({message.strip()})"


APS_SENTINEL_COLUMNS: tuple[str, ...] = tuple(TABLE_COLUMNS["apacheApsVar"])[5:]
"""apacheApsVar columns in which ``-1`` means "not measured" (GCS, meds, physiology; the
intubated/vent/dialysis flags are 0/1)."""

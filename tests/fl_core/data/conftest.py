"""Fixtures of the data tests: a small synthetic twin, the real demo, hand-made eICU tables."""

from __future__ import annotations

import csv
import gzip
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fl_core.data.eicu.synth import TwinSummary, synthesise
from fl_core.data.eicu.tables import TABLE_COLUMNS

DEMO_DIR = (Path(__file__).resolve().parents[3] / "../shared/data/eicu-demo").resolve()

TableWriter = Callable[..., Path]


@pytest.fixture(scope="session")
def twin(tmp_path_factory: pytest.TempPathFactory) -> TwinSummary:
    """30 hospitals x 6,000 stays: big enough for the twin's properties, quick to draw."""
    return synthesise(tmp_path_factory.mktemp("twin") / "eicu", hospitals=30, stays=6000, seed=7)


@pytest.fixture
def demo_dir() -> Path:
    if not DEMO_DIR.is_dir():
        pytest.skip(f"eICU demo not present at {DEMO_DIR}")
    return DEMO_DIR


def patient_row(stay: int, hospital: int, **values: Any) -> dict[str, Any]:
    """A plausible patient row; keyword arguments override single columns."""
    row: dict[str, Any] = {
        "patientunitstayid": stay,
        "patienthealthsystemstayid": stay + 1000,
        "gender": "Female",
        "age": "70",
        "ethnicity": "Caucasian",
        "hospitalid": hospital,
        "wardid": hospital * 10,
        "apacheadmissiondx": "Sepsis, pulmonary",
        "admissionheight": 165.0,
        "hospitaladmittime24": "10:00:00",
        "hospitaladmitoffset": -30,
        "hospitaladmitsource": "Emergency Department",
        "hospitaldischargeyear": 2014,
        "hospitaldischargetime24": "12:00:00",
        "hospitaldischargeoffset": 5000,
        "hospitaldischargelocation": "Home",
        "hospitaldischargestatus": "Alive",
        "unittype": "Med-Surg ICU",
        "unitadmittime24": "10:30:00",
        "unitadmitsource": "Emergency Department",
        "unitvisitnumber": 1,
        "unitstaytype": "admit",
        "admissionweight": 70.5,
        "dischargeweight": 70.0,
        "unitdischargetime24": "09:00:00",
        "unitdischargeoffset": 2000,
        "unitdischargelocation": "Floor",
        "unitdischargestatus": "Alive",
        "uniquepid": f"002-{stay}",
    }
    row.update(values)
    return row


def aps_row(stay: int, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c: -1 for c in TABLE_COLUMNS["apacheApsVar"]}
    row.update(apacheapsvarid=stay + 5, patientunitstayid=stay, intubated=0, vent=0, dialysis=0)
    row.update(eyes=4, motor=6, verbal=5, meds=0, heartrate=90, meanbp=80, temperature=36.8)
    row.update(values)
    return row


def result_rows(stay: int, iva: float, died: bool = False) -> list[dict[str, Any]]:
    rows = []
    for version, score in (("IV", iva), ("IVa", iva)):
        row: dict[str, Any] = {c: "" for c in TABLE_COLUMNS["apachePatientResult"]}
        row.update(
            apachepatientresultsid=stay * 2 + len(rows),
            patientunitstayid=stay,
            apacheversion=version,
            predictedhospitalmortality=score,
            actualhospitalmortality="EXPIRED" if died else "ALIVE",
        )
        rows.append(row)
    return rows


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> Path:
    """Write like PhysioNet: header of lower-case names, empty field for missing."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", newline="") as stream:  # type: ignore[operator]
        writer = csv.DictWriter(stream, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row.get(c, "") for c in columns})
    return path


@pytest.fixture
def rows() -> SimpleNamespace:
    """The row builders above, for tests (import mode is importlib: no sibling imports)."""
    return SimpleNamespace(
        patient=patient_row, aps=aps_row, results=result_rows, write_csv=write_csv
    )


@pytest.fixture
def write_tables(tmp_path: Path) -> TableWriter:
    """Write four hand-made tables in the real layout; returns the folder."""

    def write(
        patients: list[dict[str, Any]],
        aps: list[dict[str, Any]],
        results: list[dict[str, Any]],
        hospitals: list[dict[str, Any]] | None = None,
        suffix: str = ".csv",
        folder: str = "eicu",
    ) -> Path:
        root = tmp_path / folder
        root.mkdir()
        if hospitals is None:
            ids = sorted({p["hospitalid"] for p in patients})
            hospitals = [
                {"hospitalid": h, "numbedscategory": "<100", "teachingstatus": "f",
                 "region": "South"}
                for h in ids
            ]  # fmt: skip
        for name, rows in (
            ("patient", patients),
            ("hospital", hospitals),
            ("apacheApsVar", aps),
            ("apachePatientResult", results),
        ):
            write_csv(root / f"{name}{suffix}", list(TABLE_COLUMNS[name]), rows)
        return root

    return write

"""``fedsilo site check``: a prepared folder against the federation's feature schema, a full
local report, and a preflight summary with no count under the hospital's floor."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedsilo.ops.site_check import check_site
from fedsilo.testing.cli import run_fedsilo
from fl_core.data.feature_schema import (
    FeatureSchema,
    SchemaFeature,
    read_feature_schema,
    schema_of_prepared,
    write_feature_schema,
)
from fl_core.data.prepared import named_feature_columns, read_schema
from fl_core.data.tabular import prepare_table
from fl_core.disclosure import DisclosureFloor

FLOOR = DisclosureFloor(min_stays=10, min_events=5)
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two hospitals from one table: a large one and one of 30 stays (small splits)."""
    rng = np.random.default_rng(3)
    n = 430
    frame = pd.DataFrame(
        {
            "hospital": ["north"] * 400 + ["south"] * 30,
            "age": rng.normal(64, 14, n).clip(18, 95),
            "lactate": np.where(rng.random(n) < 0.3, np.nan, rng.lognormal(0.5, 0.4, n)),
            "sex": rng.choice(["F", "M"], n),
            "died": (rng.random(n) < 0.25).astype(int),
        }
    )
    root = tmp_path_factory.mktemp("prepared")
    frame.to_csv(root / "table.csv", index=False)
    prepare_table(
        root / "table.csv",
        root / "out",
        site_column="hospital",
        label_column="died",
        min_stays=20,
        seed=0,
    )
    return root / "out"


def _copy(prepared: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(prepared, tmp_path / "copy"))


def test_a_folder_that_fits_passes_with_counts_per_split(prepared: Path) -> None:
    result = check_site(prepared, schema_of_prepared(prepared), "test", FLOOR)
    assert result.report.passed and result.preflight.passed
    north = next(s for s in result.report.sites if s.site_id == "site-north")
    assert sum(s.rows for s in north.splits) == 400
    lactate = next(f for f in north.features if f.name == "lactate")
    assert lactate.missing > 0 and lactate.out_of_range == 0


def test_a_wrong_feature_out_of_range_values_and_a_missing_split_are_named(
    prepared: Path, tmp_path: Path
) -> None:
    data = _copy(prepared, tmp_path)
    train = data / "site_north" / "train.parquet"
    names = [f.name for f in read_schema(data).features]
    table = named_feature_columns(pq.read_table(train), names, train).to_pandas()
    table.loc[table.index[:3], "age"] = 150.0
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), train)
    (data / "site_south" / "test.parquet").unlink()
    local = schema_of_prepared(data)
    federation = FeatureSchema(
        features=(*local.features, SchemaFeature(name="heart_rate", kind="numeric"))
    )
    report = check_site(data, federation, "test", FLOOR).report
    found = {(p.code, p.feature, p.site_id, p.split, p.count) for p in report.problems}
    assert ("feature_missing", "heart_rate", None, None, None) in found
    assert ("out_of_range", "age", "site-north", "train", 3) in found
    assert ("split_missing", None, "site-south", "test", None) in found
    assert not report.passed


def test_the_preflight_summary_holds_no_count_under_the_floor(prepared: Path) -> None:
    preflight = check_site(prepared, schema_of_prepared(prepared), "test", FLOOR).preflight
    shown = [(s.rows, s.positives) for site in preflight.sites for s in site.splits]
    assert all(rows is None or rows >= FLOOR.min_stays for rows, _ in shown)
    assert all(pos is None or pos >= FLOOR.min_events for _, pos in shown)
    assert any(rows is None for rows, _ in shown)  # the small hospital's splits are withheld
    assert any(rows is not None and pos is not None for rows, pos in shown)


def test_the_command_writes_the_reports_and_fails_naming_what_does_not_fit(
    prepared: Path, tmp_path: Path
) -> None:
    schema_file = tmp_path / "schema.json"
    written = run_fedsilo(
        "data", "schema", "--data", str(prepared), "--out", str(schema_file), cwd=ROOT
    )
    assert written.returncode == 0, written.stderr
    local = schema_of_prepared(prepared)
    assert read_feature_schema(schema_file) == local
    out = tmp_path / "check"
    passed = run_fedsilo(
        "site", "check", "--data", str(prepared), "--schema", str(schema_file), "--out", str(out),
        cwd=ROOT,
    )  # fmt: skip
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "stays at this hospital" in passed.stdout and "nothing was uploaded" in passed.stdout
    summary = json.loads((out / "preflight-summary.json").read_text())
    assert summary["passed"] is True
    assert (out / "site-check.html").read_text().startswith("<!doctype html>")

    renamed = FeatureSchema(
        features=tuple(
            SchemaFeature(name="age_years", kind=f.kind) if f.name == "age" else f
            for f in local.features
        )
    )
    write_feature_schema(renamed, schema_file)
    failed = run_fedsilo(
        "site", "check", "--data", str(prepared), "--schema", str(schema_file), "--out", str(out),
        cwd=ROOT,
    )  # fmt: skip
    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert "feature missing 'age_years'" in last and "feature unexpected 'age'" in last
    assert "Traceback" not in failed.stdout + failed.stderr
    assert json.loads((out / "preflight-summary.json").read_text())["passed"] is False


def test_the_site_policy_sets_the_floor_of_the_preflight_summary(
    prepared: Path, tmp_path: Path
) -> None:
    schema_file = tmp_path / "schema.json"
    write_feature_schema(schema_of_prepared(prepared), schema_file)
    policy = tmp_path / "site-policy.yaml"
    policy.write_text(
        "site_id: site-north\ndisclosure_floor:\n  min_stays: 100\n  min_events: 40\n"
    )
    out = tmp_path / "check"
    done = run_fedsilo(
        "site", "check", "--data", str(prepared), "--schema", str(schema_file), "--out", str(out),
        "--site-policy", str(policy), cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "preflight-summary.json").read_text())
    assert summary["floor"] == {"min_stays": 100, "min_events": 40}
    splits = [s for site in summary["sites"] for s in site["splits"]]
    assert all(s["rows"] is None or s["rows"] >= 100 for s in splits)
    assert all(s["positives"] is None or s["positives"] >= 40 for s in splits)
    assert any(s["rows"] is not None for s in splits)  # north's train split: about 280 rows

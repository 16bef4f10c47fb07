"""scale_bench's layout comparison reads the same splits from both layouts, and cleans up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from bench.scale_bench import per_feature_copy, split_read_ms
from fl_core.data.prepared import FEATURES_COLUMN, PreparedFolderSource
from fl_core.data.tabular import prepare_table


def _prepared(root: Path) -> Path:
    rng = np.random.default_rng(5)
    rows = 120
    frame = pd.DataFrame(
        {
            "hospital": ["north"] * 80 + ["south"] * 40,
            "age": rng.normal(64, 14, rows),
            "lactate": np.where(rng.random(rows) < 0.3, np.nan, rng.lognormal(0.5, 0.4, rows)),
            "died": (rng.random(rows) < 0.3).astype(int),
        }
    )
    frame.to_csv(root / "table.csv", index=False)
    prepare_table(
        root / "table.csv", root / "out", site_column="hospital", label_column="died",
        min_stays=20, seed=0,
    )  # fmt: skip
    return root / "out"


def test_the_per_feature_copy_holds_the_same_splits_a_column_per_feature(tmp_path: Path) -> None:
    prepared = _prepared(tmp_path)
    copy = per_feature_copy(prepared, tmp_path / "copy")
    train = pq.ParquetFile(next(copy.glob("*/train.parquet"))).schema_arrow.names
    assert FEATURES_COLUMN not in train and "age" in train
    matrix, columns = PreparedFolderSource(prepared), PreparedFolderSource(copy)
    for site in matrix.site_ids():
        a, b = matrix.load_site(site), columns.load_site(site)
        assert np.array_equal(a.train.x, b.train.x, equal_nan=True)
        assert np.array_equal(a.test.y, b.test.y)


def test_split_read_times_both_layouts_and_removes_its_copy(tmp_path: Path) -> None:
    prepared = _prepared(tmp_path)
    found = split_read_ms(prepared, tmp_path / "work", repeats=1)
    assert set(found) == {"one column", "a column per feature"}
    assert all(ms > 0 for ms in found.values())
    assert not (tmp_path / "work").exists()

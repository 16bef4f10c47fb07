"""Bring-your-own tables at their limits: a site left with no rows is named, not dropped
silently, and a table too large to hold in memory is refused before it is read."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fl_core.data import tabular
from fl_core.data.tabular import prepare_table
from fl_core.errors import ConfigError


def _table(rows_per_site: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 3 * rows_per_site
    return pd.DataFrame(
        {
            "hospital": np.repeat(["a", "b", "c"], rows_per_site),
            "age": rng.integers(20, 90, n).astype(float),
            "died": rng.integers(0, 2, n),
        }
    )


def test_site_whose_every_row_is_dropped_is_named_as_kept_out(tmp_path: Path) -> None:
    frame = _table()
    frame["died"] = frame["died"].astype(float)
    frame.loc[frame["hospital"] == "c", "died"] = np.nan
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    result = prepare_table(
        path, tmp_path / "out", site_column="hospital", label_column="died", min_stays=10, seed=0
    )
    reasons = {e.source_value: e.reason for e in result.schema.excluded_sites}
    assert reasons == {"c": "0 rows left (label missing or impossible values)"}


def test_table_over_the_size_limit_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "huge.csv"
    _table().to_csv(path, index=False)
    os.truncate(path, 2 * 1024**3)  # sparse: 2 GiB on paper, nothing on disk

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the table was read")

    monkeypatch.setattr(tabular.pacsv, "read_csv", never)
    with pytest.raises(ConfigError, match=r"huge\.csv: 2\.0 GiB is over the 1 GiB limit"):
        prepare_table(
            path, tmp_path / "out", site_column="hospital", label_column="died", min_stays=1, seed=0
        )

"""Bring-your-own tables: detection, missing values, kept-out sites and every bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fl_core.data.prepared import PreparedFolderSource
from fl_core.data.tabular import prepare_table
from fl_core.errors import ConfigError


def make_table(rows_per_site: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sites = ["Hosp A", "Hosp B", "hosp-c"]
    n = rows_per_site * len(sites)
    frame = pd.DataFrame(
        {
            "hospital": np.repeat(sites, rows_per_site),
            "age": rng.integers(20, 90, n).astype(float),
            "weight_kg": rng.normal(80, 12, n).round(1),
            "lactate": rng.lognormal(0.5, 0.5, n).round(2),
            "sex": rng.choice(["F", "M"], n),
            "ward": rng.choice(["medical", "surgical", "cardiac"], n),
            "record_id": [f"r{i}" for i in range(n)],
            "outcome": rng.choice(["Alive", "Expired"], n, p=[0.8, 0.2]),
        }
    )
    frame.loc[rng.random(n) < 0.2, "lactate"] = np.nan
    frame.loc[3, "weight_kg"] = -70.0  # impossible
    frame.loc[4, "age"] = 150.0  # impossible
    frame.loc[5, "outcome"] = None  # unlabelled
    return frame


def test_csv_to_site_folders(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    frame = make_table()
    one_class = pd.DataFrame({**{c: frame[c].iloc[10:25] for c in frame.columns}})
    one_class["hospital"], one_class["outcome"] = "tiny-one-class", "Alive"
    tiny = frame.iloc[30:34].assign(hospital="too small")
    pd.concat([frame, one_class, tiny]).to_csv(path, index=False)
    result = prepare_table(
        path, tmp_path / "out", site_column="hospital", label_column="outcome", min_stays=10,
        seed=1,
    )  # fmt: skip
    report = result.report
    assert report.dropped_rows["impossible_weight:weight_kg"] == 1
    assert report.dropped_rows["impossible_age:age"] == 1
    assert report.dropped_rows["label_missing"] == 1
    assert "record_id" in report.dropped_columns
    assert set(report.categorical) == {"sex", "ward"}
    reasons = {e.source_value: e.reason for e in result.schema.excluded_sites}
    assert "one class" in reasons["tiny-one-class"] and "--min-stays" in reasons["too small"]
    source = PreparedFolderSource(tmp_path / "out")
    assert source.site_ids() == ["site-hosp-a", "site-hosp-b", "site-hosp-c"]
    names = source.feature_names()
    assert "lactate_missing" in names and "ward=surgical" in names and "sex=other" in names
    total = 0
    for site_id in source.site_ids():
        site = source.load_site(site_id)
        total += site.train.num_examples + site.valid.num_examples + site.test.num_examples
        assert site.test.reference_scores == {}
    assert total == 180 - 3
    col = names.index("lactate")
    assert np.isnan(source.load_site("site-hosp-a").train.x[:, col]).any()


def test_parquet_and_numeric_label(tmp_path: Path) -> None:
    frame = make_table().dropna(subset=["outcome"])
    frame["died"] = (frame.pop("outcome") == "Expired").astype(int)
    frame["hospital"] = frame["hospital"].map({"Hosp A": 1, "Hosp B": 2, "hosp-c": 3})
    path = tmp_path / "mine.parquet"
    frame.to_parquet(path)
    result = prepare_table(
        path, tmp_path / "out", site_column="hospital", label_column="died", min_stays=10, seed=0
    )
    assert [s.site_id for s in result.schema.sites] == ["site-1", "site-2", "site-3"]


def write(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    return path


def run(path: Path, tmp_path: Path, **kw: object) -> None:
    options: dict[str, object] = {
        "site_column": "hospital", "label_column": "outcome", "min_stays": 10, "seed": 0,
    }  # fmt: skip
    options.update(kw)
    prepare_table(path, tmp_path / "out", **options)  # type: ignore[arg-type]


def test_label_with_three_classes(tmp_path: Path) -> None:
    frame = make_table()
    frame.loc[7, "outcome"] = "Transferred"
    with pytest.raises(ConfigError, match=r"t\.csv: label column 'outcome' has 3") as err:
        run(write(tmp_path, frame), tmp_path)
    assert err.value.exit_code == 2


def test_label_with_one_class(tmp_path: Path) -> None:
    frame = make_table().assign(outcome="Alive")
    with pytest.raises(ConfigError, match="'outcome' has 1 distinct"):
        run(write(tmp_path, frame), tmp_path)


def test_label_of_unknown_words_needs_positive_label(tmp_path: Path) -> None:
    frame = make_table()
    frame["outcome"] = frame["outcome"].map({"Alive": "home", "Expired": "morgue"})
    path = write(tmp_path, frame)
    with pytest.raises(ConfigError, match="--positive-label"):
        run(path, tmp_path)
    run(path, tmp_path, positive_label="morgue")
    with pytest.raises(ConfigError, match="'heaven' is not a value"):
        run(path, tmp_path / "again", positive_label="heaven")


@pytest.mark.parametrize(("option", "value"), [("site_column", "clinic"), ("label_column", "y")])
def test_missing_site_or_label_column(tmp_path: Path, option: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"t\.csv: --{option.replace('_', '-')} '{value}'"):
        run(write(tmp_path, make_table()), tmp_path, **{option: value})


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nothing\.csv: file not found"):
        run(tmp_path / "nothing.csv", tmp_path)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(ConfigError, match=r"bad\.parquet: unreadable"):
        run(bad, tmp_path)
    odd = tmp_path / "data.xlsx"
    odd.write_bytes(b"xx")
    with pytest.raises(ConfigError, match="unknown file type"):
        run(odd, tmp_path)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("hospital,outcome,x\na,1,2\nb,0\n")
    with pytest.raises(ConfigError, match=r"ragged\.csv: unreadable"):
        run(ragged, tmp_path)


def test_every_site_kept_out(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no hospital left"):
        run(write(tmp_path, make_table()), tmp_path, min_stays=1000)


def test_reserved_feature_name(tmp_path: Path) -> None:
    frame = make_table().rename(columns={"lactate": "_label"})
    with pytest.raises(ConfigError, match="_label"):
        run(write(tmp_path, frame), tmp_path)

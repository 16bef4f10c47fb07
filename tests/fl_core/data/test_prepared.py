"""Prepared folders: the split, schema.json, and PreparedFolderSource over both kinds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fl_core.data.base import DataSource
from fl_core.data.eicu.prepare import prepare_eicu
from fl_core.data.prepared import (
    FEATURES_COLUMN,
    LAYOUT_KEY,
    PreparedFolderSource,
    named_feature_columns,
    read_schema,
    site_names,
)
from fl_core.data.split import TEST, TRAIN, VALID, assign_splits, class_counts
from fl_core.errors import ConfigError
from fl_core.ids import check_site_id


@pytest.fixture(scope="module")
def prepared(twin, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("prepared") / "eicu"
    prepare_eicu(twin.out, out, min_stays=20, seed=11)
    return out


def test_every_site_loads_with_both_reference_scores(prepared: Path, twin) -> None:  # type: ignore[no-untyped-def]
    source = PreparedFolderSource(prepared)
    assert isinstance(source, DataSource)
    schema = source.schema
    kept_out = [e for e in schema.excluded_sites if "--min-stays" in e.reason]
    assert len(source.site_ids()) + len(kept_out) == twin.hospitals
    assert all(e.rows < 20 for e in kept_out)
    names = source.feature_names()
    for site_id in source.site_ids():
        check_site_id(site_id)
        site = source.load_site(site_id)
        assert site.feature_names == names
        for split in (site.train, site.valid, site.test):
            assert split.x.dtype == np.float32 and split.y.dtype == np.int8
            assert set(split.reference_scores) == {"apache", "bayes"}
            assert not np.isnan(split.reference_scores["bayes"]).any()
    assert "prepared eicu folder" in source.describe()


def test_parquet_is_raw_not_standardised(prepared: Path) -> None:
    schema = read_schema(prepared)
    path = prepared / schema.sites[0].folder / "train.parquet"
    table = named_feature_columns(pq.read_table(path), [f.name for f in schema.features], path)
    age = table.column("age").to_numpy()
    assert age.min() >= 18 and age.mean() > 40  # raw years, not z-scores
    assert np.isnan(table.column("ph").to_numpy(zero_copy_only=False)).any()


def test_same_seed_same_split(twin, tmp_path: Path, prepared: Path) -> None:  # type: ignore[no-untyped-def]
    again = tmp_path / "again"
    prepare_eicu(twin.out, again, min_stays=20, seed=11)
    first = read_schema(prepared)
    assert first.sites == read_schema(again).sites
    other = tmp_path / "other"
    prepare_eicu(twin.out, other, min_stays=20, seed=12)
    a = PreparedFolderSource(prepared).load_site(first.sites[-1].site_id).test.x
    b = PreparedFolderSource(other).load_site(first.sites[-1].site_id).test.x
    assert a.shape != b.shape or not np.array_equal(a, b, equal_nan=True)


def test_unknown_site_and_missing_files(prepared: Path, tmp_path: Path) -> None:
    source = PreparedFolderSource(prepared)
    with pytest.raises(ConfigError, match="site-nowhere"):
        source.load_site("site-nowhere")
    with pytest.raises(ConfigError, match=r"schema\.json: missing"):
        PreparedFolderSource(tmp_path)


def _copy(prepared: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(prepared, target)
    return target


def test_schema_errors_name_the_field(prepared: Path, tmp_path: Path) -> None:
    root = _copy(prepared, tmp_path)
    raw = json.loads((root / "schema.json").read_text())
    del raw["features"]
    (root / "schema.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=r"schema\.json: field 'features'") as err:
        PreparedFolderSource(root)
    assert err.value.exit_code == 2
    (root / "schema.json").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        PreparedFolderSource(root)


def test_missing_split_file_and_column(prepared: Path, tmp_path: Path) -> None:
    root = _copy(prepared, tmp_path)
    site = read_schema(root).sites[0]
    path = root / site.folder / "valid.parquet"
    table = pq.read_table(path)
    pq.write_table(table.drop_columns([FEATURES_COLUMN]), path)
    with pytest.raises(ConfigError, match=r"valid\.parquet: column '_features' missing"):
        PreparedFolderSource(root).load_site(site.site_id)
    names = [f.name for f in read_schema(root).features]
    pq.write_table(named_feature_columns(table, names, path).drop_columns(["heartrate"]), path)
    with pytest.raises(ConfigError, match=r"valid\.parquet: column 'heartrate' missing"):
        PreparedFolderSource(root).load_site(site.site_id)
    path.unlink()
    with pytest.raises(ConfigError, match=r"valid\.parquet: missing"):
        PreparedFolderSource(root)


def _rewrite(root: Path, change) -> None:  # type: ignore[no-untyped-def]
    """Every split file of ``root`` rewritten as ``change(table, names, path)`` returns it."""
    schema = read_schema(root)
    names = [f.name for f in schema.features]
    for site in schema.sites:
        for path in (root / site.folder).glob("*.parquet"):
            pq.write_table(change(pq.read_table(path), names, path), path)


def test_the_features_are_one_column_and_the_per_feature_layout_still_reads(
    prepared: Path, tmp_path: Path
) -> None:
    schema = read_schema(prepared)
    path = prepared / schema.sites[0].folder / "train.parquet"
    file = pq.ParquetFile(path)
    assert file.schema_arrow.metadata[LAYOUT_KEY] == b"2"
    assert FEATURES_COLUMN in file.schema_arrow.names
    assert len(file.schema_arrow.names) == 1 + 1 + len(schema.reference_scores)
    per_feature = _copy(prepared, tmp_path)
    _rewrite(per_feature, named_feature_columns)  # layout 1: a float32 column per feature
    assert (
        "age"
        in pq.ParquetFile(per_feature / schema.sites[0].folder / "train.parquet").schema_arrow.names
    )
    matrix, columns = PreparedFolderSource(prepared), PreparedFolderSource(per_feature)
    for site_id in matrix.site_ids():
        a, b = matrix.load_site(site_id), columns.load_site(site_id)
        for split_a, split_b in ((a.train, b.train), (a.valid, b.valid), (a.test, b.test)):
            assert split_a.x.dtype == np.float32 and split_a.x.flags.writeable
            assert np.array_equal(split_a.x, split_b.x, equal_nan=True)
            assert np.array_equal(split_a.y, split_b.y)


def test_a_layout_this_reader_does_not_know_and_a_wrong_width_are_refused(
    prepared: Path, tmp_path: Path
) -> None:
    root = _copy(prepared, tmp_path)
    site = read_schema(root).sites[0]
    path = root / site.folder / "test.parquet"
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({LAYOUT_KEY: b"3"}), path)
    with pytest.raises(ConfigError, match=r"test\.parquet: prepared file layout b'3'"):
        PreparedFolderSource(root).load_site(site.site_id)
    narrow = table.set_column(
        0, FEATURES_COLUMN, pa.array([b"1234"] * table.num_rows, type=pa.binary(4))
    )
    pq.write_table(narrow, path)
    with pytest.raises(ConfigError, match=r"column '_features' has type fixed_size_binary\[4\]"):
        PreparedFolderSource(root).load_site(site.site_id)


def test_out_folder_protection(twin, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        prepare_eicu(twin.out, out, min_stays=1, seed=0)
    with pytest.raises(ConfigError, match=r"keep\.txt"):
        prepare_eicu(twin.out, out, min_stays=1, seed=0, overwrite=True)
    with pytest.raises(ConfigError, match="--min-stays"):
        prepare_eicu(twin.out, tmp_path / "x", min_stays=0, seed=0)


def test_all_hospitals_kept_out_is_an_error(twin, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="no hospital left"):
        prepare_eicu(twin.out, tmp_path / "x", min_stays=10**6, seed=0)


def test_site_names() -> None:
    assert site_names("73") == ("site-73", "site_73")
    assert site_names(" St. Mary's ") == ("site-st-mary-s", "site_st-mary-s")
    with pytest.raises(ConfigError):
        site_names("!!!")


def test_small_hospital_all_train_and_one_class() -> None:
    y = np.array([0, 1, 0, 0, 0], dtype=np.int8)
    assert (assign_splits(y, seed=0, site_key="a") == TRAIN).all()
    y = np.zeros(40, dtype=np.int8)
    codes = assign_splits(y, seed=0, site_key="a")
    assert sorted(np.bincount(codes, minlength=3)) == sorted([28, 6, 6])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 200), st.integers(0, 30), st.integers(0, 2**31))
def test_split_is_stratified_and_complete(negatives: int, positives: int, seed: int) -> None:
    y = np.array([0] * negatives + [1] * positives, dtype=np.int8)
    codes = assign_splits(y, seed=seed, site_key="site-1")
    assert codes.shape == y.shape and set(np.unique(codes)) <= {TRAIN, VALID, TEST}
    if y.shape[0] >= 10:
        for label, n in ((0, negatives), (1, positives)):
            counts = np.bincount(codes[y == label], minlength=3)
            assert tuple(counts) == class_counts(n, (0.7, 0.15, 0.15))
    assert np.array_equal(codes, assign_splits(y, seed=seed, site_key="site-1"))


def test_train_rows_are_known_without_loading_and_match_the_data(prepared: Path) -> None:
    source = PreparedFolderSource(prepared)
    rows = source.train_rows()
    assert set(rows) == set(source.site_ids())
    for site_id in source.site_ids():
        assert rows[site_id] == source.load_site(site_id).train.num_examples

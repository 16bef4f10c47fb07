"""The prepared folder: one sub-folder of Parquet splits per hospital plus ``schema.json``.

Layout (the same for eICU and bring-your-own tables)::

    OUT/schema.json
    OUT/site_<key>/train.parquet   valid.parquet   test.parquet

Each Parquet file holds the feature matrix, the label column ``_label`` (int8 0/1) and one
float64 column ``_ref_<name>`` per reference score. The matrix is one column, ``_features``:
each row's features (float32, NaN = not measured, in schema order) as one fixed-size binary
value of little-endian float32, so a split is read with one column decode and one zero-copy
view instead of a decode and a copy per feature (the file's ``fedsilo.layout`` metadata says
``2``). Files without that field hold one float32 column per feature, named as in the schema
(layout 1, still read; ``fedsilo data evaluate`` writes its folds that way), and
``named_feature_columns`` turns a layout-2 table into that form for tools that look at a
feature by name.
``schema.json`` records the features, the one-hot vocabularies, the split seed and every
hospital with its ``site_id`` (a valid exchange id, ``site-<key>``) and folder, plus the
hospitals kept out and why. ``PreparedFolderSource`` reads it back as a ``DataSource``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fl_core.data.base import DataSource, SiteData, Split
from fl_core.data.split import DEFAULT_FRACTIONS, MIN_STAYS_TO_SPLIT, SPLIT_NAMES, assign_splits
from fl_core.errors import ConfigError
from fl_core.ids import check_site_id, site_names
from fl_core.types import SiteId

SCHEMA_FILE = "schema.json"
FORMAT_NAME = "fedsilo-prepared"
FORMAT_VERSION = 1
LABEL_COLUMN = "_label"
REFERENCE_PREFIX = "_ref_"
FEATURES_COLUMN = "_features"
LAYOUT_KEY = b"fedsilo.layout"
LAYOUT_COLUMNS = b"1"
"""One float32 column per feature (files without ``LAYOUT_KEY``)."""
LAYOUT_MATRIX = b"2"
"""The features as one ``FEATURES_COLUMN`` of fixed-size little-endian float32 rows."""
_FLOAT32 = np.dtype("<f4")

_THREADED_READ_ROWS = 200_000
"""Splits this large are read with Arrow's threads (a single big hospital, not many small)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FeatureEntry(_Frozen):
    name: str = Field(min_length=1)
    kind: Literal["numeric", "indicator", "onehot"]
    source: str
    group: str = Field(default="core", min_length=1, max_length=64)
    """Which feature set the column belongs to (eICU: ``core``, ``admission``,
    ``apache_prediction``); a candidate model of ``data evaluate`` trains on some groups."""


class SiteEntry(_Frozen):
    site_id: str
    folder: str
    source_value: str
    """The hospital as the input names it (``hospitalid`` or the site column's value)."""
    rows: dict[str, int]
    positives: dict[str, int]
    note: str | None = None


class ExcludedSite(_Frozen):
    source_value: str
    rows: int
    positives: int
    reason: str


class SplitSettings(_Frozen):
    seed: int
    fractions: tuple[float, float, float]
    min_stays_to_split: int
    stratified_by: str = "label"


class PreparedSchema(_Frozen):
    """What ``schema.json`` holds; validated on read so a hand-edited file fails clearly."""

    format: Literal["fedsilo-prepared"]
    format_version: Literal[1]
    kind: Literal["eicu", "tabular"]
    description: str
    label: str
    label_column: str
    features: tuple[FeatureEntry, ...]
    categories: dict[str, tuple[str, ...]]
    reference_scores: dict[str, str]
    """Reference score name (``apache``, ``bayes``) -> its Parquet column."""
    split: SplitSettings
    sites: tuple[SiteEntry, ...]
    excluded_sites: tuple[ExcludedSite, ...]
    input_report: dict[str, object]


class PreparedWriter:
    """Writes one hospital at a time into an output folder, then ``schema.json`` last.

    ``schema.json`` is written only when every hospital is on disk, so a folder with a schema
    is complete; a crash leaves no schema and the reader refuses the folder.
    """

    def __init__(
        self,
        out: Path,
        *,
        feature_names: tuple[str, ...],
        reference_names: tuple[str, ...],
        seed: int,
        overwrite: bool,
        fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
        min_stays_to_split: int = MIN_STAYS_TO_SPLIT,
    ) -> None:
        reserved = [n for n in feature_names if n.startswith("_")]
        if reserved:
            raise ConfigError(
                f"column(s) {', '.join(reserved)} start with '_', which prepared files reserve "
                "for the label and reference scores; rename them"
            )
        if len(set(feature_names)) != len(feature_names):
            raise ConfigError("feature names repeat; every column needs a distinct name")
        self.out = out
        self.feature_names = feature_names
        self.reference_names = reference_names
        self.split = SplitSettings(
            seed=seed, fractions=fractions, min_stays_to_split=min_stays_to_split
        )
        self.sites: list[SiteEntry] = []
        self.excluded: list[ExcludedSite] = []
        self._site_ids: dict[str, str] = {}
        prepare_out_dir(out, overwrite=overwrite)

    def exclude(self, source_value: str, y: npt.NDArray[np.int8], reason: str) -> None:
        """Record a hospital kept out (too few rows, one class) with the reason."""
        self.excluded.append(
            ExcludedSite(
                source_value=source_value,
                rows=int(y.shape[0]),
                positives=int(y.sum()),
                reason=reason,
            )
        )

    def add_site(
        self,
        source_value: str,
        x: npt.NDArray[np.float32],
        y: npt.NDArray[np.int8],
        references: Mapping[str, npt.NDArray[np.float64]],
    ) -> SiteEntry:
        """Split one hospital's rows (stratified, seeded) and write its three Parquet files."""
        site_id, folder = site_names(source_value)
        if site_id in self._site_ids:
            raise ConfigError(
                f"sites {self._site_ids[site_id]!r} and {source_value!r} both map to site id "
                f"{site_id!r}; rename one of them in the site column"
            )
        self._site_ids[site_id] = source_value
        codes = assign_splits(
            y,
            seed=self.split.seed,
            site_key=site_id,
            fractions=self.split.fractions,
            min_stays_to_split=self.split.min_stays_to_split,
        )
        (self.out / folder).mkdir()
        rows: dict[str, int] = {}
        positives: dict[str, int] = {}
        for code, name in enumerate(SPLIT_NAMES):
            mask = codes == code
            table = self._table(x[mask], y[mask], {k: v[mask] for k, v in references.items()})
            pq.write_table(
                table,
                self.out / folder / f"{name}.parquet",
                compression="snappy",
                use_dictionary=False,
            )
            rows[name] = int(mask.sum())
            positives[name] = int(y[mask].sum())
        note = None
        if y.shape[0] < self.split.min_stays_to_split:
            note = (
                f"too small to split ({y.shape[0]} rows < {self.split.min_stays_to_split}): "
                "all rows in train"
            )
        elif positives["train"] in (0, rows["train"]):
            note = "one class only"
        entry = SiteEntry(
            site_id=site_id,
            folder=folder,
            source_value=source_value,
            rows=rows,
            positives=positives,
            note=note,
        )
        self.sites.append(entry)
        return entry

    def _table(
        self,
        x: npt.NDArray[np.float32],
        y: npt.NDArray[np.int8],
        references: Mapping[str, npt.NDArray[np.float64]],
    ) -> pa.Table:
        arrays = [feature_matrix_column(x)]
        names = [FEATURES_COLUMN]
        arrays.append(pa.array(y.astype(np.int8), type=pa.int8()))
        names.append(LABEL_COLUMN)
        for name in self.reference_names:
            arrays.append(pa.array(references[name].astype(np.float64), type=pa.float64()))
            names.append(REFERENCE_PREFIX + name)
        table = pa.Table.from_arrays(arrays, names=names)
        return table.replace_schema_metadata({LAYOUT_KEY: LAYOUT_MATRIX})

    def finish(
        self,
        *,
        kind: Literal["eicu", "tabular"],
        description: str,
        label: str,
        features: tuple[FeatureEntry, ...],
        categories: Mapping[str, tuple[str, ...]],
        input_report: Mapping[str, object],
    ) -> PreparedSchema:
        """Write ``schema.json`` (atomically) once every hospital has been written."""
        if not self.sites:
            raise ConfigError(
                f"no hospital left to write to {self.out}: all {len(self.excluded)} were kept "
                "out (see the reasons above); lower --min-stays or check the label column"
            )
        schema = PreparedSchema(
            format="fedsilo-prepared",
            format_version=1,
            kind=kind,
            description=description,
            label=label,
            label_column=LABEL_COLUMN,
            features=features,
            categories=dict(categories),
            reference_scores={n: REFERENCE_PREFIX + n for n in self.reference_names},
            split=self.split,
            sites=tuple(self.sites),
            excluded_sites=tuple(self.excluded),
            input_report=dict(input_report),
        )
        tmp = self.out / (SCHEMA_FILE + ".tmp")
        tmp.write_text(schema.model_dump_json(indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.out / SCHEMA_FILE)
        return schema


def feature_matrix_column(x: npt.NDArray[np.float32]) -> pa.FixedSizeBinaryArray:
    """The rows of ``x`` as one fixed-size binary value each (layout 2's ``_features``)."""
    rows = np.ascontiguousarray(x, dtype=_FLOAT32)
    width = rows.shape[1] * _FLOAT32.itemsize
    if width == 0:
        raise ConfigError("a prepared folder needs at least one feature column")
    array = pa.Array.from_buffers(
        pa.binary(width), rows.shape[0], [None, pa.py_buffer(rows.tobytes())]
    )
    assert isinstance(array, pa.FixedSizeBinaryArray)
    return array


def prepare_out_dir(out: Path, *, overwrite: bool) -> None:
    """Create ``out``; refuse a non-empty one unless ``overwrite`` (then clear our files only)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder; choose another path")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"--out {out}: folder is not empty; choose a new one or --overwrite")
        ours = [p for p in out.iterdir() if p.name.startswith("site_") and p.is_dir()]
        foreign = [
            p
            for p in out.iterdir()
            if p not in ours and p.name not in (SCHEMA_FILE, SCHEMA_FILE + ".tmp")
        ]
        if foreign:
            raise ConfigError(
                f"--out {out}: holds {foreign[0].name!r}, which is not a prepared file; "
                "refusing to overwrite it, choose an empty folder"
            )
        (out / SCHEMA_FILE).unlink(missing_ok=True)
        for path in ours:
            shutil.rmtree(path)
    out.mkdir(parents=True, exist_ok=True)


def read_schema(root: Path) -> PreparedSchema:
    """Parse and validate ``root/schema.json``; any problem is a ``ConfigError`` naming it."""
    path = root / SCHEMA_FILE
    if not path.is_file():
        raise ConfigError(
            f"{path}: missing; --data must be a folder written by 'fedsilo data prepare'"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        schema = PreparedSchema.model_validate(raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: unreadable ({err}); prepare the folder again") from err
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"{path}: field {where!r}: {first['msg']}; prepare the folder again"
        ) from err
    names = [f.name for f in schema.features]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: feature names repeat; prepare the folder again")
    for site in schema.sites:
        check_site_id(site.site_id)
        if Path(site.folder).name != site.folder or site.folder in ("", ".", ".."):
            raise ConfigError(f"{path}: site {site.site_id}: folder {site.folder!r} is not a name")
    return schema


class PreparedFolderSource(DataSource):
    """A ``DataSource`` over a prepared folder (eICU or bring-your-own), one hospital at a time."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        root = self.root
        self.schema = read_schema(root)
        self._features = tuple(f.name for f in self.schema.features)
        self._sites = {s.site_id: s for s in self.schema.sites}
        if len(self._sites) != len(self.schema.sites):
            raise ConfigError(f"{root / SCHEMA_FILE}: a site_id repeats; prepare again")
        for site in self.schema.sites:
            for name in SPLIT_NAMES:
                path = root / site.folder / f"{name}.parquet"
                if not path.is_file():
                    raise ConfigError(f"{path}: missing (site {site.site_id}); prepare again")

    def site_ids(self) -> list[SiteId]:
        return [s.site_id for s in self.schema.sites]

    def feature_names(self) -> tuple[str, ...]:
        return self._features

    def train_rows(self) -> dict[SiteId, int]:
        return {s.site_id: s.rows.get("train", 0) for s in self.schema.sites}

    def load_site(self, site_id: SiteId) -> SiteData:
        site = self._entry(site_id)
        splits = [self._read_split(site, name) for name in SPLIT_NAMES]
        return SiteData(site_id, self._features, splits[0], splits[1], splits[2])

    def load_split(self, site_id: SiteId, name: str) -> Split:
        """One split of one site, the others left unread (a model selection reads no test)."""
        if name not in SPLIT_NAMES:
            raise ConfigError(f"split {name!r}: use one of {', '.join(SPLIT_NAMES)}")
        return self._read_split(self._entry(site_id), name)

    def _entry(self, site_id: SiteId) -> SiteEntry:
        site = self._sites.get(site_id)
        if site is None:
            raise ConfigError(
                f"site {site_id!r} is not in {self.root / SCHEMA_FILE}; known: "
                f"{', '.join(list(self._sites)[:5])}{' ...' if len(self._sites) > 5 else ''}"
            )
        return site

    def describe(self) -> str:
        rows = sum(sum(s.rows.values()) for s in self.schema.sites)
        return (
            f"prepared {self.schema.kind} folder {self.root}: {len(self.schema.sites)} sites, "
            f"{rows} rows, {len(self._features)} features, label {self.schema.label!r}"
        )

    def _read_split(self, site: SiteEntry, name: str) -> Split:
        path = self.root / site.folder / f"{name}.parquet"
        try:
            file = pq.ParquetFile(path)
            available = set(file.schema_arrow.names)
            layout = _layout(file, path)
            features = [FEATURES_COLUMN] if layout == LAYOUT_MATRIX else list(self._features)
            wanted = [
                *features,
                self.schema.label_column,
                *self.schema.reference_scores.values(),
            ]
            missing = [c for c in wanted if c not in available]
            if missing:
                raise ConfigError(
                    f"{path}: column {missing[0]!r} missing ({len(missing)} in all); "
                    "prepare the folder again"
                )
            # Arrow's thread pool costs more CPU than it saves on a small split, and a worker
            # hosts hundreds of them on one core
            threads = file.metadata.num_rows >= _THREADED_READ_ROWS
            table = file.read(columns=wanted, use_threads=threads)
        except (OSError, pa.ArrowException) as err:
            raise ConfigError(f"{path}: unreadable Parquet file ({err}); prepare again") from err
        if layout == LAYOUT_MATRIX:
            x = _feature_matrix(table, len(self._features), path)
        else:
            x = np.empty((table.num_rows, len(self._features)), dtype=np.float32)
            for i, column in enumerate(self._features):
                x[:, i] = _numeric(table, column, path, np.float32)
        y = _numeric(table, self.schema.label_column, path, np.int8)
        if table.num_rows and not np.isin(y, (0, 1)).all():
            raise ConfigError(
                f"{path}: column {self.schema.label_column!r} holds values other than 0/1"
            )
        references = {
            ref: _numeric(table, column, path, np.float64)
            for ref, column in self.schema.reference_scores.items()
        }
        return Split(x=x, y=y.astype(np.int8), reference_scores=references)


def _numeric(table: pa.Table, column: str, path: Path, dtype: type[np.generic]) -> npt.NDArray:  # type: ignore[type-arg]
    """One column as a numpy array of ``dtype``; a non-numeric or null label is refused."""
    data = table.column(column)
    if not (pa.types.is_floating(data.type) or pa.types.is_integer(data.type)):
        raise ConfigError(f"{path}: column {column!r} has type {data.type}, expected a number")
    if dtype is np.int8 and data.null_count:
        raise ConfigError(f"{path}: column {column!r} has empty values; prepare again")
    return np.asarray(data.to_numpy(zero_copy_only=False), dtype=dtype)


def _layout(file: pq.ParquetFile, path: Path) -> bytes:
    """The file's layout (``LAYOUT_KEY``); one this reader does not know is refused."""
    layout = bytes((file.schema_arrow.metadata or {}).get(LAYOUT_KEY, LAYOUT_COLUMNS))
    if layout not in (LAYOUT_COLUMNS, LAYOUT_MATRIX):
        raise ConfigError(
            f"{path}: prepared file layout {layout[:20]!r} is not one this fedsilo reads "
            f"({LAYOUT_COLUMNS.decode()} or {LAYOUT_MATRIX.decode()}); upgrade fedsilo or "
            "prepare the folder again"
        )
    return layout


def _feature_matrix(table: pa.Table, width: int, path: Path) -> npt.NDArray[np.float32]:
    """Layout 2's ``_features`` as a (rows, width) float32 array, viewed, not converted.

    One copy follows the view: the split then owns writable memory (``torch.from_numpy``
    warns on a read-only array), and a copy of the whole matrix costs less than decoding one
    feature column would (``python -m bench --only data_bench`` times the load).
    """
    column = table.column(FEATURES_COLUMN)
    expected = pa.binary(width * _FLOAT32.itemsize)
    if column.type != expected:
        raise ConfigError(
            f"{path}: column {FEATURES_COLUMN!r} has type {column.type}, expected {expected} "
            f"({width} float32 features); prepare the folder again"
        )
    if column.null_count:
        raise ConfigError(f"{path}: column {FEATURES_COLUMN!r} has empty rows; prepare again")
    if table.num_rows == 0:
        return np.empty((0, width), dtype=np.float32)
    rows = column.combine_chunks()  # one chunk (one row group) is returned as it is
    view = np.frombuffer(
        rows.buffers()[1],
        dtype=_FLOAT32,
        count=len(rows) * width,
        offset=rows.offset * width * _FLOAT32.itemsize,
    )
    return view.reshape(len(rows), width).astype(np.float32)


def named_feature_columns(table: pa.Table, feature_names: Sequence[str], path: Path) -> pa.Table:
    """A prepared split's table with one float32 column per feature (layout 1's form).

    For tools that look at a feature by name (``fedsilo site check``); a layout-1 table is
    returned as it is. The feature names come from the folder's ``schema.json``; ``path``
    names the file in errors.
    """
    if FEATURES_COLUMN not in table.column_names:
        return table
    matrix = _feature_matrix(table, len(feature_names), path)
    rest = table.drop_columns([FEATURES_COLUMN])
    for index, name in enumerate(feature_names):
        rest = rest.append_column(name, pa.array(matrix[:, index], type=pa.float32()))
    return rest.replace_schema_metadata(None)

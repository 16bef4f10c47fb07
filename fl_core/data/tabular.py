"""Bring your own table: one CSV or Parquet file with a site column -> prepared folders.

``fedsilo data prepare --csv FILE --site-column COL --label-column COL`` turns any tabular file
into the same per-hospital folders as eICU. Column kinds are detected from the data: numbers
stay raw (NaN = missing, plus a ``<col>_missing`` indicator where the column has gaps), text
with few values is one-hot encoded over the file's most frequent values (the vocabulary goes
to schema.json, the same columns for every site), and identifier-like or date columns are left
out and reported. Rows with impossible values (negative weight or height, age outside 0-120)
are dropped and counted; a site with one class or too few rows is kept out with a message.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fl_core.data.defaults import TABLE_MIN_STAYS
from fl_core.data.prepared import FeatureEntry, PreparedSchema, PreparedWriter
from fl_core.errors import ConfigError

DEFAULT_MIN_STAYS = TABLE_MIN_STAYS
MAX_CATEGORIES = 30
MAX_TABLE_BYTES = 1024**3
"""Largest table file read: the whole table is held in memory (as text, then as columns) at
several times its size on disk, so a bigger file is refused before it is opened."""
"""Text columns one-hot encode at most this many values (the most frequent); the rest: other."""
NUMERIC_SHARE = 0.95
"""A text column whose non-empty values parse as numbers this often is read as numeric."""
IDENTIFIER_SHARE = 0.5
"""A text column with more distinct values than this share of rows looks like an identifier."""

POSITIVE_WORDS = frozenset({"1", "true", "t", "yes", "y", "expired", "dead", "died", "death",
                            "deceased", "positive", "pos"})  # fmt: skip
NEGATIVE_WORDS = frozenset({"0", "false", "f", "no", "n", "alive", "survived", "negative",
                            "neg"})  # fmt: skip

IMPOSSIBLE_RULES: tuple[tuple[str, str, float, float], ...] = (
    ("age", r"(^|_)age(_|$)|^age", 0.0, 120.0),
    ("weight", r"weight|(^|_)wt(_|$)|mass", 0.0, np.inf),
    ("height", r"height|(^|_)ht(_|$)", 0.0, np.inf),
)
"""(rule, column-name pattern, lowest possible, highest possible): values outside are impossible."""

DELIMITERS = (",", ";", "\t", "|")
"""What a header line is searched for when no --delimiter is given (European exports use ;)."""


@dataclass
class TabularReport:
    """Every row and column that did not become a feature, and why."""

    rows_read: int = 0
    dropped_rows: dict[str, int] = field(default_factory=dict)
    dropped_columns: dict[str, str] = field(default_factory=dict)
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    delimiter: str | None = None  # the CSV's, as given or detected; None for Parquet
    positive_label: str = ""  # the label value read as the event (given or detected)

    def as_dict(self) -> dict[str, object]:
        return {
            "rows_read": self.rows_read,
            "delimiter": self.delimiter,
            "positive_label": self.positive_label,
            "dropped_rows": dict(self.dropped_rows),
            "dropped_columns": dict(self.dropped_columns),
            "numeric_columns": list(self.numeric),
            "categorical_columns": list(self.categorical),
        }


@dataclass(frozen=True)
class TabularResult:
    schema: PreparedSchema
    report: TabularReport


def header_line(path: Path) -> str:
    """The first line of a text table (gzip read through), for the delimiter."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as handle:
            return str(handle.readline(65536))
    except (OSError, EOFError):
        return ""


def detect_delimiter(header: str, default: str) -> str:
    """The delimiter the header line is split by: ``default`` if it occurs, else the most
    frequent of ``DELIMITERS`` (a header without any is one column: ``default``)."""
    if default in header:
        return default
    counts = {candidate: header.count(candidate) for candidate in DELIMITERS}
    best = max(counts, key=lambda candidate: counts[candidate])
    return best if counts[best] else default


def shown_delimiter(delimiter: str) -> str:
    return "'\\t'" if delimiter == "\t" else repr(delimiter)


def read_any_table(path: Path, delimiter: str | None = None) -> tuple[pd.DataFrame, str | None]:
    """A CSV (``.csv``, ``.csv.gz``, ``.tsv``) or Parquet file as a DataFrame, and the CSV's
    delimiter (``delimiter``, or detected from the header line); else ConfigError."""
    if not path.is_file():
        raise ConfigError(f"--csv {path}: file not found; give the path of a CSV or Parquet file")
    size = path.stat().st_size
    if size > MAX_TABLE_BYTES:
        raise ConfigError(
            f"--csv {path}: {size / 1024**3:.1f} GiB is over the {MAX_TABLE_BYTES / 1024**3:.0f} "
            "GiB limit (the table is read into memory); keep only the columns and rows the "
            "model needs and try again"
        )
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            return pq.read_table(path).to_pandas(), None
        if name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt")):
            if delimiter is None:
                delimiter = detect_delimiter(header_line(path), "\t" if ".tsv" in name else ",")
            elif len(delimiter) != 1:
                raise ConfigError(f"--delimiter {delimiter!r}: give one character, e.g. ';'")
            parse = pacsv.ParseOptions(delimiter=delimiter)
            convert = pacsv.ConvertOptions(strings_can_be_null=True)
            frame = pacsv.read_csv(path, parse_options=parse, convert_options=convert)
            return frame.to_pandas(), delimiter
    except (OSError, UnicodeDecodeError, pa.ArrowException) as err:
        hint = ""
        if delimiter is not None:
            other = detect_delimiter(header_line(path), delimiter)
            if other != delimiter:
                hint = f"; the header splits on {shown_delimiter(other)}: use --delimiter {other!r}"
        raise ConfigError(f"{path}: unreadable table ({str(err).strip()[:300]}){hint}") from err
    raise ConfigError(f"{path}: unknown file type; use .csv, .csv.gz, .tsv or .parquet")


def parse_label(
    values: pd.Series, path: Path, column: str, positive_label: str | None
) -> tuple[npt.NDArray[np.float64], str]:
    """The label as 1.0 / 0.0 / NaN (missing), and the value read as the event (lower case);
    anything but two classes is a ConfigError."""
    present = values.dropna()
    text = present.astype("string").str.strip().str.lower()
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        whole = bool((present % 1 == 0).all())
        text = (present.astype("int64") if whole else present).astype("string")
    distinct = sorted(text.unique().tolist())
    shown = ", ".join(repr(v) for v in distinct[:6]) + (" ..." if len(distinct) > 6 else "")
    if len(distinct) != 2:
        raise ConfigError(
            f"{path}: label column {column!r} has {len(distinct)} distinct value(s) ({shown}); "
            "it must hold exactly two classes (e.g. 0/1)"
        )
    if positive_label is not None:
        positive = positive_label.strip().lower()
        if positive not in distinct:
            raise ConfigError(
                f"{path}: --positive-label {positive_label!r} is not a value of label column "
                f"{column!r} ({shown})"
            )
    else:
        known = [v for v in distinct if v in POSITIVE_WORDS]
        negative = [v for v in distinct if v in NEGATIVE_WORDS]
        if len(known) != 1 or len(negative) != 1:
            raise ConfigError(
                f"{path}: label column {column!r} holds {shown}; which is the event? Pass "
                "--positive-label VALUE or use 0/1"
            )
        positive = known[0]
    label = pd.Series(np.nan, index=values.index, dtype="float64")
    label.loc[present.index] = (text == positive).astype("float64")
    return np.asarray(label.to_numpy(dtype=np.float64), dtype=np.float64), positive


def site_values(values: pd.Series) -> pd.Series:
    """Site values as text, with whole-number floats written without ``.0`` (73.0 -> "73")."""
    if pd.api.types.is_float_dtype(values):
        whole = values.dropna() % 1 == 0
        if bool(whole.all()):
            return values.astype("Int64").astype("string")
    return values.astype("string").str.strip()


def prepare_table(
    path: Path,
    out: Path,
    *,
    site_column: str,
    label_column: str,
    min_stays: int,
    seed: int,
    positive_label: str | None = None,
    overwrite: bool = False,
    delimiter: str | None = None,
) -> TabularResult:
    """Read one table, detect its columns, and write one prepared folder per site."""
    if min_stays < 1:
        raise ConfigError(f"--min-stays {min_stays}: must be at least 1")
    frame, delimiter = read_any_table(path, delimiter)
    frame.columns = [str(c) for c in frame.columns]
    for option, column in (("--site-column", site_column), ("--label-column", label_column)):
        if column not in frame.columns:
            shown = ", ".join(list(frame.columns)[:8])
            hint = ""
            if delimiter is not None and len(frame.columns) == 1:
                other = detect_delimiter(str(frame.columns[0]), delimiter)
                if other != delimiter:
                    hint = f"; use --delimiter {other!r}"
            raise ConfigError(
                f"{path}: {option} {column!r} is not a column of the file (columns: {shown}"
                f"{' ...' if len(frame.columns) > 8 else ''}){hint}"
            )
    if site_column == label_column:
        raise ConfigError(f"--site-column and --label-column are both {site_column!r}")
    label, positive = parse_label(frame[label_column], path, label_column, positive_label)
    report = TabularReport(rows_read=len(frame), delimiter=delimiter, positive_label=positive)
    sites = site_values(frame[site_column])
    keep = ~np.isnan(label)
    report.dropped_rows["label_missing"] = int((~keep).sum())
    sites_read = set(sites.dropna().tolist())
    site_missing = sites.isna().to_numpy(dtype=bool) & keep
    report.dropped_rows["site_missing"] = int(site_missing.sum())
    keep &= ~site_missing
    features = frame.drop(columns=[site_column, label_column])
    keep &= ~_impossible_rows(features, keep, report)
    features = features.loc[keep].reset_index(drop=True)
    y = label[keep].astype(np.int8)
    site = sites.loc[keep].reset_index(drop=True)
    x, specs, categories = _encode(features, report)

    writer = PreparedWriter(
        out,
        feature_names=tuple(s.name for s in specs),
        reference_names=(),
        seed=seed,
        overwrite=overwrite,
    )
    order = np.argsort(site.to_numpy(dtype=object).astype(str), kind="stable")
    ordered = site.to_numpy(dtype=object)[order].astype(str)
    bounds = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    for source in sorted(sites_read - set(site.tolist())):  # every row of it was dropped
        writer.exclude(
            str(source), np.zeros(0, np.int8), "0 rows left (label missing or impossible values)"
        )
    for rows in np.split(order, bounds):
        if rows.shape[0] == 0:
            continue
        source = str(site.iloc[rows[0]])
        positives = int(y[rows].sum())
        if rows.shape[0] < min_stays:
            writer.exclude(source, y[rows], f"{rows.shape[0]} rows < --min-stays {min_stays}")
        elif positives in (0, rows.shape[0]):
            writer.exclude(source, y[rows], f"one class only ({positives} of {rows.shape[0]})")
        else:
            writer.add_site(source, x[rows], y[rows], {})
    schema = writer.finish(
        kind="tabular",
        description=f"table {path.name}: site column {site_column!r}",
        label=f"{label_column} (positive: {positive})",
        features=specs,
        categories=categories,
        input_report=report.as_dict(),
    )
    return TabularResult(schema, report)


def _impossible_rows(
    features: pd.DataFrame, keep: npt.NDArray[np.bool_], report: TabularReport
) -> npt.NDArray[np.bool_]:
    """Rows with a value that cannot be true (by column name), counted per rule and column."""
    bad = np.zeros(len(features), dtype=bool)
    for rule, pattern, low, high in IMPOSSIBLE_RULES:
        for column in features.columns:
            if not re.search(pattern, column.lower()):
                continue
            values = pd.to_numeric(features[column], errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan
            )
            with np.errstate(invalid="ignore"):
                hit = ((values < low) | (values > high)) & keep & ~bad
            if hit.any():
                report.dropped_rows[f"impossible_{rule}:{column}"] = int(hit.sum())
            bad |= hit
    return bad


def _encode(
    features: pd.DataFrame, report: TabularReport
) -> tuple[npt.NDArray[np.float32], tuple[FeatureEntry, ...], dict[str, tuple[str, ...]]]:
    """Detect each column's kind and build the float32 matrix, names and vocabularies."""
    columns: list[npt.NDArray[np.float64]] = []
    specs: list[FeatureEntry] = []
    indicators: list[tuple[str, npt.NDArray[np.float64]]] = []
    categories: dict[str, tuple[str, ...]] = {}
    n = len(features)
    for name in features.columns:
        values = features[name]
        numeric = _as_numeric(values)
        if numeric is not None:
            columns.append(numeric)
            specs.append(FeatureEntry(name=name, kind="numeric", source=name))
            report.numeric.append(name)
            missing = np.isnan(numeric)
            if missing.any() and not missing.all():
                indicators.append((name, missing.astype(np.float64)))
            if missing.all():
                columns.pop()
                specs.pop()
                report.numeric.pop()
                report.dropped_columns[name] = "empty: no value in any row"
            continue
        if pd.api.types.is_datetime64_any_dtype(values) or isinstance(values.dtype, pd.PeriodDtype):
            report.dropped_columns[name] = "date/time: derive a number (e.g. days) to use it"
            continue
        text = values.astype("string").str.strip()
        counts = text.value_counts()
        if counts.empty:
            report.dropped_columns[name] = "empty: no value in any row"
            continue
        if len(counts) > MAX_CATEGORIES and len(counts) > IDENTIFIER_SHARE * max(n, 1):
            report.dropped_columns[name] = f"identifier-like text ({len(counts)} distinct values)"
            continue
        ranked = sorted(counts.items(), key=lambda item: (-int(item[1]), str(item[0])))
        vocabulary = tuple(str(value) for value, _ in ranked[:MAX_CATEGORIES])
        codes = pd.Index(list(vocabulary), dtype="string").get_indexer(text)
        for index, value in enumerate(vocabulary):
            columns.append((codes == index).astype(np.float64))
            specs.append(FeatureEntry(name=f"{name}={value}", kind="onehot", source=name))
        columns.append((text.notna().to_numpy(dtype=bool) & (codes < 0)).astype(np.float64))
        specs.append(FeatureEntry(name=f"{name}=other", kind="onehot", source=name))
        categories[name] = (*vocabulary, "other")
        report.categorical.append(name)
    for name, missing in indicators:
        columns.append(missing)
        specs.append(FeatureEntry(name=f"{name}_missing", kind="indicator", source=name))
    if not columns:
        raise ConfigError("no usable feature column is left besides the site and label columns")
    return np.column_stack(columns).astype(np.float32), tuple(specs), categories


def _as_numeric(values: pd.Series) -> npt.NDArray[np.float64] | None:
    """Numbers (and booleans as 0/1) as float64; text that is mostly numbers too; else None."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        numbers = pd.to_numeric(values, errors="coerce")
        return np.asarray(numbers.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    if pd.api.types.is_datetime64_any_dtype(values):
        return None
    present = values.dropna()
    if present.empty:
        return np.full(len(values), np.nan)
    parsed = pd.to_numeric(values.astype("string").str.strip(), errors="coerce")
    if parsed.notna().sum() >= NUMERIC_SHARE * len(present):
        return np.asarray(parsed.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    return None

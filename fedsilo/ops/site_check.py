"""``fedsilo site check``: does a hospital's prepared folder fit the federation's schema?

Run at the hospital before it joins. The full report (counts per split, label prevalence,
missingness and observed minimum and maximum per feature, every value out of range) is
written locally and never leaves the hospital. The preflight summary is the part a hospital
may share: pass or fail, what failed by name, and only counts at or above its disclosure
floor. Nothing is uploaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from fl_core.data.feature_schema import FeatureSchema, SchemaFeature, schema_of_prepared
from fl_core.data.prepared import (
    PreparedSchema,
    SiteEntry,
    named_feature_columns,
    read_schema,
)
from fl_core.data.split import SPLIT_NAMES
from fl_core.disclosure import DisclosureFloor
from fl_core.errors import ConfigError

if TYPE_CHECKING:
    from fl_core.exchange.protocol import Exchange

REPORT_JSON = "site-check.json"
REPORT_HTML = "site-check.html"
PREFLIGHT_JSON = "preflight-summary.json"

ProblemCode = Literal[
    "feature_missing",
    "feature_unexpected",
    "feature_order",
    "kind_mismatch",
    "split_missing",
    "split_unreadable",
    "column_missing",
    "out_of_range",
    "non_finite",
    "no_training_rows",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Problem(_Frozen):
    code: ProblemCode
    feature: str | None = None
    site_id: str | None = None
    split: str | None = None
    count: int | None = None
    """How many values (out_of_range, non_finite); local only."""

    def line(self) -> str:
        where = "/".join(p for p in (self.site_id, self.split) if p)
        parts = [self.code.replace("_", " ")]
        if self.feature is not None:
            parts.append(repr(self.feature))
        if self.count is not None:
            parts.append(f"({self.count} values)")
        if where:
            parts.append(f"in {where}")
        return " ".join(parts)


class SplitCounts(_Frozen):
    split: str
    rows: int
    positives: int


class FeatureStats(_Frozen):
    name: str
    kind: str
    present: int
    missing: int
    out_of_range: int
    observed_min: float | None
    observed_max: float | None


class SiteReport(_Frozen):
    site_id: str
    splits: list[SplitCounts]
    features: list[FeatureStats]


class SiteCheckReport(_Frozen):
    """The full local report (``site-check.json``): stays at the hospital."""

    data: str
    schema_source: str
    passed: bool
    floor: DisclosureFloor
    problems: list[Problem]
    sites: list[SiteReport]


class PreflightSplit(_Frozen):
    split: str
    rows: int | None
    """None: fewer rows than the floor's ``min_stays``."""
    positives: int | None
    """None: fewer events (or non-events) than the floor's ``min_events``, or rows withheld."""


class PreflightSite(_Frozen):
    site_id: str
    splits: list[PreflightSplit]


class PreflightProblem(_Frozen):
    code: ProblemCode
    feature: str | None = None
    site_id: str | None = None
    split: str | None = None


class PreflightSummary(_Frozen):
    """What a hospital may share: pass/fail, problems by name, counts over its floor."""

    passed: bool
    floor: DisclosureFloor
    problems: list[PreflightProblem]
    sites: list[PreflightSite]


@dataclass(frozen=True)
class SiteCheckResult:
    report: SiteCheckReport
    preflight: PreflightSummary


def schema_problems(federation: FeatureSchema, local: FeatureSchema) -> list[Problem]:
    """Names the data lacks or adds, kinds that differ, and columns in another order."""
    expected = {f.name: f for f in federation.features}
    have = {f.name: f for f in local.features}
    problems = [Problem(code="feature_missing", feature=n) for n in expected if n not in have]
    problems += [Problem(code="feature_unexpected", feature=n) for n in have if n not in expected]
    problems += [
        Problem(code="kind_mismatch", feature=n)
        for n, f in expected.items()
        if n in have and have[n].kind != f.kind
    ]
    common = [n for n in federation.names() if n in have]
    if not problems and common != [n for n in local.names() if n in expected]:
        first = next(a for a, b in zip(common, local.names(), strict=False) if a != b)
        problems.append(Problem(code="feature_order", feature=first))
    return problems


def _column(table: pa.Table, name: str) -> npt.NDArray[np.float64]:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)


def _check_split(
    path: Path,
    prepared: PreparedSchema,
    federation: FeatureSchema,
    site: SiteEntry,
    split: str,
    totals: dict[str, list[float]],
) -> tuple[SplitCounts | None, list[Problem]]:
    """One split's counts, with its features' statistics added into ``totals``."""
    if not path.is_file():
        return None, [Problem(code="split_missing", site_id=site.site_id, split=split)]
    try:
        names = [f.name for f in prepared.features]
        table = named_feature_columns(pq.read_table(path), names, path)
    except (OSError, pa.ArrowException, ConfigError):
        return None, [Problem(code="split_unreadable", site_id=site.site_id, split=split)]
    problems: list[Problem] = []
    present = set(table.column_names)
    positives = 0
    if prepared.label_column in present:
        positives = int(np.nansum(_column(table, prepared.label_column)))
    else:
        problems.append(
            Problem(
                code="column_missing",
                feature=prepared.label_column,
                site_id=site.site_id,
                split=split,
            )
        )
    listed = {f.name for f in prepared.features}
    for feature in federation.features:
        if feature.name not in present:
            if feature.name in listed:
                problems.append(
                    Problem(
                        code="column_missing",
                        feature=feature.name,
                        site_id=site.site_id,
                        split=split,
                    )
                )
            continue
        values = _column(table, feature.name)
        problems += _value_problems(feature, values, site.site_id, split)
        _add_stats(totals.setdefault(feature.name, [0, 0, 0, np.inf, -np.inf]), feature, values)
    return SplitCounts(split=split, rows=table.num_rows, positives=positives), problems


def _outside(feature: SchemaFeature, values: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    finite = values[np.isfinite(values)]
    allowed = feature.allowed()
    if allowed is None:
        return np.zeros(finite.shape, dtype=bool)
    outside = (finite < allowed[0]) | (finite > allowed[1])
    if feature.kind != "numeric":
        outside |= (finite != 0.0) & (finite != 1.0)
    return np.asarray(outside, dtype=bool)


def _value_problems(
    feature: SchemaFeature, values: npt.NDArray[np.float64], site_id: str, split: str
) -> list[Problem]:
    counts: list[tuple[ProblemCode, int]] = [
        ("non_finite", int(np.isinf(values).sum())),
        ("out_of_range", int(_outside(feature, values).sum())),
    ]
    return [
        Problem(code=code, feature=feature.name, site_id=site_id, split=split, count=count)
        for code, count in counts
        if count
    ]


def _add_stats(total: list[float], feature: SchemaFeature, values: npt.NDArray[np.float64]) -> None:
    """``total``: present, missing, out of range, observed min, observed max."""
    finite = values[np.isfinite(values)]
    total[0] += int((~np.isnan(values)).sum())
    total[1] += int(np.isnan(values).sum())
    total[2] += int(_outside(feature, values).sum())
    if finite.size:
        total[3] = min(total[3], float(finite.min()))
        total[4] = max(total[4], float(finite.max()))


def _site_report(
    root: Path, prepared: PreparedSchema, federation: FeatureSchema, site: SiteEntry
) -> tuple[SiteReport, list[Problem]]:
    totals: dict[str, list[float]] = {}
    splits: list[SplitCounts] = []
    problems: list[Problem] = []
    for split in SPLIT_NAMES:
        path = root / site.folder / f"{split}.parquet"
        counts, found = _check_split(path, prepared, federation, site, split, totals)
        problems += found
        if counts is not None:
            splits.append(counts)
    train = next((s for s in splits if s.split == "train"), None)
    if train is not None and train.rows == 0:
        problems.append(Problem(code="no_training_rows", site_id=site.site_id, split="train"))
    features = []
    for feature in federation.features:
        if feature.name not in totals:
            continue
        present, missing, outside, low, high = totals[feature.name]
        features.append(
            FeatureStats(
                name=feature.name,
                kind=feature.kind,
                present=int(present),
                missing=int(missing),
                out_of_range=int(outside),
                observed_min=None if not np.isfinite(low) else low,
                observed_max=None if not np.isfinite(high) else high,
            )
        )
    return SiteReport(site_id=site.site_id, splits=splits, features=features), problems


def preflight_of(report: SiteCheckReport) -> PreflightSummary:
    """The shareable part: problems without counts, split sizes only over the floor."""
    floor = report.floor
    sites = []
    for site in report.sites:
        splits = []
        for s in site.splits:
            rows = s.rows if s.rows >= floor.min_stays else None
            balanced = min(s.positives, s.rows - s.positives) >= floor.min_events
            positives = s.positives if rows is not None and balanced else None
            splits.append(PreflightSplit(split=s.split, rows=rows, positives=positives))
        sites.append(PreflightSite(site_id=site.site_id, splits=splits))
    problems = [
        PreflightProblem(code=p.code, feature=p.feature, site_id=p.site_id, split=p.split)
        for p in report.problems
    ]
    return PreflightSummary(passed=report.passed, floor=floor, problems=problems, sites=sites)


def check_site(
    data: Path, federation: FeatureSchema, schema_source: str, floor: DisclosureFloor
) -> SiteCheckResult:
    """Check every hospital in the prepared folder ``data`` against ``federation``."""
    prepared = read_schema(data)
    problems = schema_problems(federation, schema_of_prepared(data))
    sites = []
    for site in prepared.sites:
        site_report, found = _site_report(data, prepared, federation, site)
        sites.append(site_report)
        problems += found
    report = SiteCheckReport(
        data=str(data),
        schema_source=schema_source,
        passed=not problems,
        floor=floor,
        problems=problems,
        sites=sites,
    )
    return SiteCheckResult(report=report, preflight=preflight_of(report))


def failure_line(report: SiteCheckReport, html: Path) -> str:
    """One line naming what does not fit (the first few problems) and where to read more."""
    shown = "; ".join(p.line() for p in report.problems[:4])
    more = f" and {len(report.problems) - 4} more" if len(report.problems) > 4 else ""
    return f"the data does not fit the federation's schema: {shown}{more}; see {html}"


def published_schema(exchange: Exchange) -> FeatureSchema:
    """The feature schema of the study in the newest global manifest, its digest verified.

    The study carries the ordered feature names only; kinds and ranges follow from the names
    as the federation's data sources write them (``schema_from_names``).
    """
    from fedsilo.ops.study_approval import newest_global, verified_study
    from fl_core.data.feature_schema import schema_from_names
    from fl_core.errors import ConfigError

    hint = "check against the centre's schema file instead: --schema FILE"
    try:
        study = verified_study(newest_global(exchange))
    except ConfigError as err:
        raise ConfigError(f"{err} (or {hint})") from err
    if not study.features:
        raise ConfigError(f"the published study lists no features; {hint}")
    return schema_from_names(study.features)

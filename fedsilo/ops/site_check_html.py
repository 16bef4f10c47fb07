"""The local site check report as one HTML page and the files it is written to (they stay at
the hospital, except the preflight summary)."""

from __future__ import annotations

from pathlib import Path

from fedsilo.ops.html_page import heading, page, paragraph, table
from fedsilo.ops.site_check import (
    PREFLIGHT_JSON,
    REPORT_HTML,
    REPORT_JSON,
    SiteCheckReport,
    SiteCheckResult,
)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def site_check_html(report: SiteCheckReport) -> str:
    verdict = "PASS: the data fits the federation's schema" if report.passed else "FAIL"
    parts = [
        paragraph(verdict, "pass" if report.passed else "fail"),
        paragraph(
            f"data {report.data}; schema from {report.schema_source}; disclosure floor "
            f"{report.floor.min_stays} stays, {report.floor.min_events} events. This report "
            "stays at the hospital: it holds exact counts and observed values."
        ),
    ]
    if report.problems:
        rows = [
            [p.code, p.feature or "", p.site_id or "", p.split or "", _number(p.count)]
            for p in report.problems
        ]
        parts += [
            heading("Problems"),
            table(
                ["problem", "feature", "site", "split", "values"], rows, {0, 1, 2, 3}, "problems"
            ),
        ]
    for site in report.sites:
        parts.append(heading(f"Site {site.site_id}"))
        split_rows = [
            [
                s.split,
                str(s.rows),
                str(s.positives),
                f"{s.positives / s.rows:.1%}" if s.rows else "",
            ]
            for s in site.splits
        ]
        parts.append(table(["split", "rows", "events", "prevalence"], split_rows, {0}))
        feature_rows = [
            [
                f.name,
                f.kind,
                str(f.present),
                str(f.missing),
                f"{f.missing / max(f.present + f.missing, 1):.1%}",
                str(f.out_of_range),
                _number(f.observed_min),
                _number(f.observed_max),
            ]
            for f in site.features
        ]
        headers = [
            "feature",
            "kind",
            "present",
            "missing",
            "missing %",
            "out of range",
            "min",
            "max",
        ]
        parts.append(table(headers, feature_rows, {0, 1}))
    return page("fedsilo site check", parts)


def write_site_check(result: SiteCheckResult, out: Path) -> dict[str, Path]:
    """The local report (JSON, HTML) and the shareable preflight summary, under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "report": out / REPORT_JSON,
        "html": out / REPORT_HTML,
        "preflight": out / PREFLIGHT_JSON,
    }
    paths["report"].write_text(result.report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    paths["html"].write_text(site_check_html(result.report), encoding="utf-8")
    paths["preflight"].write_text(
        result.preflight.model_dump_json(indent=2) + "\n", encoding="utf-8"
    )
    return paths

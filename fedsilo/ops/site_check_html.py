"""The local site check report as one HTML page (it stays at the hospital)."""

from __future__ import annotations

from fedsilo.ops.html_page import heading, page, paragraph, table
from fedsilo.ops.site_check import SiteCheckReport


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

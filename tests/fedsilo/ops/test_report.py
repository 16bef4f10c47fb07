"""``fedsilo report``: every section has content, and the page renders in headless Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from fedsilo.ops.personalisation_report import PersonalisationSummary, SitePersonalisation
from fedsilo.ops.report import ReportOutcome, RunData, personalisation_section, write_report
from fedsilo.ops.report_stats import (
    MIN_CLASS_STAYS,
    auroc_interval,
    calibration_groups,
    funnel_limits,
    outside_limits,
    ratio_interval,
    site_figures,
    wilson_interval,
)
from fl_core.config import FederationConfig
from fl_core.metrics import ClassHistogram


@pytest.fixture(scope="module")
def report(
    finished_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, ReportOutcome]:
    out = tmp_path_factory.mktemp("report") / "report.html"
    return out, write_report(finished_run, out)


def _sections(page: str) -> dict[str, str]:
    """Each h2 title with the HTML up to the next h2."""
    parts = re.split(r"<h2>(.*?)</h2>", page.split("<body>", 1)[1])
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_every_figure_has_data_and_no_section_is_empty(report: tuple[Path, ReportOutcome]) -> None:
    page = report[0].read_text()
    points = dict(re.findall(r'<figure id="fig-(\w+)" data-points="(\d+)"', page))
    assert set(points) == {"metrics", "hospitals", "calibration", "rejections"}
    assert all(int(n) > 0 for n in points.values()), points
    assert report[1].figures == ["metrics", "hospitals", "calibration", "rejections"]
    sections = _sections(page)
    assert "Cohort and run" in sections
    for title, body in sections.items():
        assert re.sub(r"<[^>]+>", "", body).strip(), f"section {title!r} is empty"
    # the run used no DP and no fine-tuning: the summary says so, no section stands empty
    assert not any("Privacy" in t or "Personalisation" in t for t in sections)
    assert "no privacy budget is spent" in sections["Cohort and run"]
    assert "off (no fine-tuning)" in sections["Cohort and run"]
    assert not re.search(r'<(?:link|img|script)[^>]+(?:src|href)="https?:', page)


def test_hospital_table_gives_counts_and_no_chance_auroc(
    report: tuple[Path, ReportOutcome],
) -> None:
    page = report[0].read_text()
    table = page.split('id="hospital-table"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table)[1:]
    assert len(rows) == report[1].hospitals == 4
    for row in rows:
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        stays, deaths = int(cells[1]), int(cells[2])
        assert 0 <= deaths <= stays
        if min(deaths, stays - deaths) < MIN_CLASS_STAYS:
            assert cells[5].startswith("not evaluable")
        else:
            assert re.fullmatch(r"\d\.\d{3} \(\d\.\d{3}-\d\.\d{3}\)", cells[5]), cells[5]


def _histogram(positives: list[int], negatives: list[int]) -> ClassHistogram:
    return ClassHistogram(np.asarray(positives, np.int64), np.asarray(negatives, np.int64))


def test_one_death_is_not_evaluable_and_has_a_wide_ratio_interval() -> None:
    site = site_figures("h1", _histogram([0] * 9 + [1], [5] * 10))
    assert site.stays == 51 and site.deaths == 1
    assert site.auroc is None
    assert "1 death(s), 50 survivor(s)" in site.not_evaluable_reason()
    ratio = site.observed_expected
    assert ratio is not None and ratio.low < ratio.estimate < ratio.high
    assert ratio.high / ratio.low > 20  # one death says little


def test_auroc_interval_narrows_with_more_events() -> None:
    few = auroc_interval(0.8, 5, 50)
    many = auroc_interval(0.8, 200, 2000)
    assert few.low < many.low < 0.8 < many.high < few.high
    assert few.low >= 0.0 and few.high <= 1.0


def test_funnel_limits_bracket_one_and_narrow() -> None:
    expected = np.asarray([0.5, 5.0, 50.0, 500.0])
    for level in (0.95, 0.998):
        lower, upper = funnel_limits(expected, level)
        assert np.all(lower <= 1.0) and np.all(upper >= 1.0)
        assert np.all(np.diff(upper) < 0) and np.all(np.diff(upper - lower) < 0)
    inner = funnel_limits(expected, 0.95)
    outer = funnel_limits(expected, 0.998)
    assert np.all(outer[1] > inner[1])
    assert not outside_limits(0, 0.5, 0.998) and not outside_limits(1, 0.02, 0.998)
    assert outside_limits(0, 20.0, 0.998) and outside_limits(12, 2.0, 0.998)
    # exact Poisson: 10 observed where 10 expected sits well inside its own interval
    assert ratio_interval(10, 10.0).low < 1.0 < ratio_interval(10, 10.0).high


def test_calibration_groups_keep_every_stay_and_carry_intervals() -> None:
    positives = np.zeros(200, np.int64)
    negatives = np.zeros(200, np.int64)
    positives[150:160] = 3
    negatives[20:120] = 5
    groups = calibration_groups(positives, negatives, 10)
    assert sum(g.stays for g in groups) == positives.sum() + negatives.sum()
    assert sum(g.deaths for g in groups) == positives.sum()
    assert np.all(np.diff([g.predicted for g in groups]) > 0)
    assert groups[0].observed.estimate == 0.0 and groups[-1].observed.estimate > 0.5
    for g in groups:
        assert g.observed.low <= g.observed.estimate <= g.observed.high
    assert wilson_interval(0, 16).high > 0.1  # no death among 16 stays is not a rate of 0


def test_personalisation_never_shows_a_chance_auroc() -> None:
    small = _histogram([0, 0, 1, 0], [3, 4, 2, 0])  # one death in ten stays
    large = _histogram([0, 2, 4, 6], [30, 20, 10, 5])
    data = RunData(
        run_name="r",
        config=FederationConfig(),
        rows=[],
        results=[],
        evaluation_round=3,
        site_histograms={"site-001": small, "site-002": large},
        personalisation=PersonalisationSummary(
            round_index=3,
            sites=[
                SitePersonalisation("site-001", 10, 1.0, 0.0),
                SitePersonalisation("site-002", 77, 0.70, 0.74),
            ],
            pooled_global_auroc=0.71,
            pooled_finetuned_auroc=0.73,
        ),
    )
    page = personalisation_section(data)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", page)
    assert cells[:8] == [
        "site-001", "10", "not evaluable (1 death(s))", "not evaluable (1 death(s))",
        "site-002", "77", "0.700", "0.740",
    ]  # fmt: skip
    assert "raised the AUROC of 1 of the 1 hospitals" in page

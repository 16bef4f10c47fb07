"""``fedsilo report RUN``: one self-contained HTML page of what a run did, for a clinical lead.

The page is built only from what the run folder holds: ``config.json``, ``metrics.jsonl`` and
the exchange documents (results with their decisions, the hospitals' update manifests with
their test-split histograms). Figures are interactive plotly charts whose JavaScript is inlined
once; the page loads nothing from the network (its Content-Security-Policy forbids it).

The page is a list of sections, ``SECTION_BUILDERS``: each takes the run's data and returns its
HTML, or "" when the run has nothing for it, so that no section is ever empty. A module that
adds a section appends its builder to that list with one line below it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from plotly.offline import get_plotlyjs
from pydantic import BaseModel, ConfigDict

from fedsilo.engine.metrics_row import MetricsRow, read_metrics
from fedsilo.ops.calibration_view import calibration_cells, calibration_html
from fedsilo.ops.data_profile import FederatedDataProfile, federated_profile
from fedsilo.ops.disclosure_view import withheld_html
from fedsilo.ops.html_page import heading
from fedsilo.ops.personalisation_report import PersonalisationSummary, personalisation_summary
from fedsilo.ops.policy_view import policy_declines_html
from fedsilo.ops.privacy_report import epsilon_table, privacy_html
from fedsilo.ops.profile_view import profile_parts
from fedsilo.ops.report_figures import (
    ReportFigure,
    calibration_figure,
    funnel_figure,
    metrics_figure,
    rejections_figure,
)
from fedsilo.ops.report_stats import (
    MIN_CLASS_STAYS,
    CalibrationGroup,
    SiteFigures,
    calibration_groups,
    site_figures,
)
from fedsilo.ops.report_summary import summary_rows
from fedsilo.ops.status import read_update_manifest
from fl_core.config import FederationConfig
from fl_core.errors import ConfigError
from fl_core.exchange.histograms import class_histogram
from fl_core.exchange.manifests import RoundResult
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.uri import open_store
from fl_core.metrics import ClassHistogram
from fl_core.types import SiteId

CALIBRATION_GROUPS = 10


@dataclass(frozen=True)
class RunData:
    """What the report draws, read from a run folder (or built by a test from histograms)."""

    run_name: str
    config: FederationConfig
    rows: list[MetricsRow]
    results: list[RoundResult]
    evaluation_round: int | None
    site_histograms: dict[SiteId, ClassHistogram]
    """Each hospital's test histogram under the final global model."""
    personalisation: PersonalisationSummary | None = None
    data_profile: FederatedDataProfile | None = None

    @cached_property
    def sites(self) -> list[SiteFigures]:
        """Per-hospital figures, largest test split first."""
        found = [site_figures(s, h) for s, h in self.site_histograms.items()]
        return sorted(found, key=lambda s: (-s.stays, s.site_id))

    @cached_property
    def pooled(self) -> ClassHistogram:
        histograms = list(self.site_histograms.values())
        if not histograms:
            return ClassHistogram.empty(0)
        positives = np.sum([h.positives for h in histograms], axis=0)
        negatives = np.sum([h.negatives for h in histograms], axis=0)
        return ClassHistogram(positives.astype(np.int64), negatives.astype(np.int64))

    @cached_property
    def calibration(self) -> list[CalibrationGroup]:
        return calibration_groups(self.pooled.positives, self.pooled.negatives, CALIBRATION_GROUPS)


class ReportOutcome(BaseModel):
    """What ``fedsilo report --json`` prints about the page it wrote."""

    model_config = ConfigDict(frozen=True)

    report: str
    figures: list[str]
    hospitals: int
    hospitals_with_auroc: int
    test_stays: int
    test_deaths: int
    final_auroc: float | None
    evaluation_round: int | None


def _read_rows(run_dir: Path) -> list[MetricsRow]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise ConfigError(f"{path} not found; RUN must be a run folder written by simulate")
    return read_metrics(path)


def _read_config(run_dir: Path) -> FederationConfig:
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise ConfigError(f"{config_path} not found; RUN must be a run folder written by simulate")
    return FederationConfig.model_validate_json(config_path.read_text())


def open_run_exchange(run_dir: Path, endpoint_url: str | None = None) -> Exchange:
    """The exchange a run folder used: its config's URI, else its ``exchange/`` folder."""
    config = _read_config(run_dir)
    uri = config.exchange.uri or (run_dir / "exchange").resolve().as_uri()
    store = open_store(uri, endpoint_url=endpoint_url or config.exchange.endpoint_url)
    return Exchange(store, config.federation_id)


def load_run(run_dir: Path, endpoint_url: str | None = None) -> RunData:
    rows = _read_rows(run_dir)
    config = _read_config(run_dir)
    exchange = open_run_exchange(run_dir, endpoint_url)
    results = []
    round_index = 1
    while (result := exchange.read_result(round_index)) is not None:
        results.append(result)
        round_index += 1
    evaluated = [r for r in results if r.evaluation is not None and r.accepted]
    final = next((r for r in reversed(evaluated) if r.task == "evaluate"), None)
    final = final or (evaluated[-1] if evaluated else None)
    histograms: dict[SiteId, ClassHistogram] = {}
    if final is not None:
        for decision in final.accepted:
            manifest = read_update_manifest(exchange, final.round_index, decision.site_id)
            if manifest is None or manifest.evaluation is None:
                continue
            histograms[decision.site_id] = class_histogram(manifest.evaluation.histogram)
    bins = {h.positives.size for h in histograms.values()}
    if len(bins) > 1:  # the aggregator admits one bin count per round; never mix two
        common = max(bins, key=lambda n: sum(h.positives.size == n for h in histograms.values()))
        histograms = {s: h for s, h in histograms.items() if h.positives.size == common}
    return RunData(
        run_name=run_dir.name,
        config=config,
        rows=rows,
        results=results,
        evaluation_round=final.round_index if final else None,
        site_histograms=dict(sorted(histograms.items())),
        personalisation=personalisation_summary(exchange, final.round_index, histograms)
        if final is not None
        else None,
        data_profile=federated_profile(exchange, config.admission.max_num_examples),
    )


def _table(headers: list[str], rows: list[list[str]], text_columns: set[int]) -> str:
    """An HTML table, every cell escaped; ``text_columns`` align left."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="text">{html.escape(c)}</td>'
            if i in text_columns
            else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _figure_html(figure: ReportFigure) -> str:
    plot = figure.figure.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"plot-{figure.name}",
        config={"displaylogo": False, "responsive": True},
    )
    return (
        f'<h2>{html.escape(figure.title)}</h2><figure id="fig-{figure.name}" '
        f'data-points="{figure.points}">{plot}<figcaption>{html.escape(figure.caption)}'
        "</figcaption></figure>"
    )


SectionBuilder = Callable[[RunData], str]


def summary_section(data: RunData) -> str:
    rows = summary_rows(data.config, data.results, data.sites, data.evaluation_round)
    body = "".join(
        f'<tr><th class="text">{html.escape(k)}</th><td class="text">{html.escape(v)}</td></tr>'
        for k, v in rows
    )
    return f'<h2>Cohort and run</h2><table id="summary">{body}</table>'


def metrics_section(data: RunData) -> str:
    headers = ["round", "AUROC", "AUPRC", "loss", "train loss", "accepted", "rejected", "s"]
    cells = [
        [_fmt(value) for value in (r.round, r.auroc, r.auprc, r.loss, r.train_loss)]
        + [_fmt(value) for value in (r.sites_accepted, r.sites_rejected, r.seconds)]
        for r in data.rows
    ]
    table = _table(headers, cells, set())
    return _figure_html(metrics_figure(data.rows)) + table


def _interval(low: float, high: float, digits: int = 2) -> str:
    return f"({low:.{digits}f}-{high:.{digits}f})"


def hospital_rows(sites: list[SiteFigures]) -> list[list[str]]:
    """The per-hospital table: stays, deaths, expected, O/E and AUROC with 95% intervals."""
    rows = []
    for s in sites:
        ratio = s.observed_expected
        rows.append(
            [
                s.site_id,
                str(s.stays),
                str(s.deaths),
                f"{s.expected_deaths:.2f}",
                "-"
                if ratio is None
                else f"{ratio.estimate:.2f} {_interval(ratio.low, ratio.high)}",
                f"{s.auroc.estimate:.3f} {_interval(s.auroc.low, s.auroc.high, 3)}"
                if s.auroc is not None
                else s.not_evaluable_reason(),
            ]
        )
    return rows


def hospitals_section(data: RunData) -> str:
    if not data.sites:
        return ""
    evaluable = sum(s.evaluable for s in data.sites)
    note = (
        f"{len(data.sites)} hospitals, largest test split first. AUROC is shown with its 95% "
        f"interval where a hospital's test split holds at least {MIN_CLASS_STAYS} deaths and "
        f"{MIN_CLASS_STAYS} survivors ({evaluable} of {len(data.sites)} hospitals); elsewhere it "
        "would be 0 or 1 by chance and is marked not evaluable. Observed/expected deaths "
        "exists for every hospital with a test stay; its interval is exact (Poisson)."
    )
    table = _table(
        [
            "hospital",
            "test stays",
            "deaths",
            "expected",
            "observed/expected (95% CI)",
            "AUROC (95% CI)",
        ],
        hospital_rows(data.sites),
        {0, 5},
    )
    return (
        _figure_html(funnel_figure(data.sites, data.evaluation_round))
        + f'<p>{html.escape(note)}</p><div class="scroll" id="hospital-table">{table}</div>'
    )


def calibration_section(data: RunData) -> str:
    groups = data.calibration
    if not groups:
        return ""
    table = _table(
        ["group", "mean predicted risk", "observed rate (95% CI)", "stays", "deaths"],
        [
            [
                str(i + 1),
                f"{g.predicted:.3f}",
                f"{g.observed.estimate:.3f} {_interval(g.observed.low, g.observed.high, 3)}",
                str(g.stays),
                str(g.deaths),
            ]
            for i, g in enumerate(groups)
        ],
        set(),
    )
    figures = calibration_html(data.rows, _table) if calibration_cells(data.rows) else ""
    return _figure_html(calibration_figure(groups)) + table + figures


def rejections_section(data: RunData) -> str:
    if not data.results:
        return ""
    rejected = [
        [str(r.round_index), d.site_id, d.reason or "-", d.detail or "-"]
        for r in data.results
        for d in r.rejected
    ]
    table = (
        _table(["round", "site", "reason", "detail"], rejected, {1, 2, 3})
        if rejected
        else "<p>No update was rejected in this run.</p>"
    )
    return _figure_html(rejections_figure(data.results)) + table


def personalisation_section(data: RunData) -> str:
    """Global versus fine-tuned AUROC per hospital; only when the run fine-tuned.

    A hospital's own AUROC is shown under the same rule as in the hospitals' table: with
    fewer than ``MIN_CLASS_STAYS`` deaths or survivors it is not evaluable, not 0 or 1.
    """
    summary = data.personalisation
    if summary is None:
        return ""
    figures = {s.site_id: s for s in data.sites}

    def auroc(site_id: str, value: float | None) -> str:
        site = figures.get(site_id)
        if site is not None and not site.evaluable:
            return f"not evaluable ({site.deaths} death(s))"
        return "-" if value is None else f"{value:.3f}"

    rows = [
        [
            s.site_id,
            str(s.num_examples),
            auroc(s.site_id, s.global_auroc),
            auroc(s.site_id, s.finetuned_auroc),
        ]
        for s in summary.sites
    ]
    rows.append(
        [
            "pooled",
            str(sum(s.num_examples for s in summary.sites)),
            _fmt(summary.pooled_global_auroc),
            _fmt(summary.pooled_finetuned_auroc),
        ]
    )
    pairs = [
        (s.global_auroc, s.finetuned_auroc)
        for s in summary.sites
        if s.site_id in figures and figures[s.site_id].evaluable
        if s.global_auroc is not None and s.finetuned_auroc is not None
    ]
    improved = sum(finetuned > global_ for global_, finetuned in pairs)
    note = (
        f"Round {summary.round_index}: each hospital fine-tuned the final global model on its "
        "own training split and scored both on its test split; the fine-tuned weights never "
        f"left the hospital. Fine-tuning raised the AUROC of {improved} of the {len(pairs)} "
        "hospitals whose test split has enough deaths and survivors to show one."
    )
    table = _table(["hospital", "test stays", "global AUROC", "fine-tuned AUROC"], rows, {0})
    return (
        "<h2>Personalisation: global versus fine-tuned AUROC per hospital</h2>"
        f'<p>{html.escape(note)}</p><div class="scroll" id="personalisation">{table}</div>'
    )


def privacy_section(data: RunData) -> str:
    """Epsilon per hospital per round; only when the run spent a privacy budget."""
    return privacy_html(data.results, _table) if epsilon_table(data.results)[1] else ""


def profile_section(data: RunData) -> str:
    """The run report's cohort section; empty when no hospital reported a profile."""
    if data.data_profile is None or not data.data_profile.sites:
        return ""
    return (
        '<section id="data-profile">'
        + heading("Cohort: the federated data profile")
        + "".join(profile_parts(data.data_profile))
        + "</section>"
    )


SECTION_BUILDERS: list[SectionBuilder] = [
    summary_section,
    metrics_section,
    hospitals_section,
    calibration_section,
    rejections_section,
    personalisation_section,
    privacy_section,
    lambda data: withheld_html(data.results, _table),
    lambda data: policy_declines_html(data.results, _table),
    profile_section,
]
"""The page's sections in order. Another module adds its own section here, one line each."""


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1080px; color: #222;
  padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.8em; }
figure { margin: 1em 0; } figcaption { font-size: 0.9em; color: #444; margin-top: 0.4em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.6em 0; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; position: sticky; top: 0; } td.text { text-align: left; }
div.scroll { max-height: 420px; overflow-y: auto; border: 1px solid #ddd; display: inline-block; }
div.scroll table { margin: 0; }
.na { color: #8a5a00; font-style: italic; }
"""

# Counts the charts plotly drew and the tallest one, for the headless-browser test; an error
# in any script reaches the console, which the test reads.
_SCRIPT = """
window.addEventListener("error", function (e) { console.error("page error: " + e.message); });
window.addEventListener("load", function () {
  var drawn = 0, tallest = 0;
  document.querySelectorAll("figure div.js-plotly-plot").forEach(function (plot) {
    var box = plot.getBoundingClientRect();
    if (plot.querySelector(".main-svg") && box.height > 0) { drawn += 1; }
    tallest = Math.max(tallest, box.height);
  });
  document.body.setAttribute("data-figures-drawn", String(drawn));
  document.body.setAttribute("data-tallest-figure-px", String(Math.round(tallest)));
});
"""


def render_html(data: RunData) -> str:
    sections = [html_text for build in SECTION_BUILDERS if (html_text := build(data))]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">",
            f"<title>fedsilo report: {html.escape(data.run_name)}</title>",
            f"<style>{_STYLE}</style>",
            f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>',
            f"<h1>fedsilo run {html.escape(data.run_name)}</h1>",
            *sections,
            f"<script>{_SCRIPT}</script>",
            "</body></html>",
        ]
    )


def figure_names(page: str) -> list[str]:
    """The figures a rendered page holds, in order."""
    return re.findall(r'<figure id="fig-(\w+)"', page)


def outcome(data: RunData, out: Path, page: str) -> ReportOutcome:
    return ReportOutcome(
        report=str(out),
        figures=figure_names(page),
        hospitals=len(data.sites),
        hospitals_with_auroc=sum(s.evaluable for s in data.sites),
        test_stays=sum(s.stays for s in data.sites),
        test_deaths=sum(s.deaths for s in data.sites),
        final_auroc=data.rows[-1].auroc if data.rows else None,
        evaluation_round=data.evaluation_round,
    )


def write_page(data: RunData, out: Path) -> ReportOutcome:
    page = render_html(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return outcome(data, out, page)


def write_report(run_dir: Path, out: Path, endpoint_url: str | None = None) -> ReportOutcome:
    """Write the HTML page of a run folder; returns what it holds."""
    return write_page(load_run(run_dir, endpoint_url), out)

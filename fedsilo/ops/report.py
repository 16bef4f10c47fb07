"""``fedsilo report RUN``: one self-contained HTML page (and PNGs) of what a run did.

The page is built only from what the run folder holds: ``metrics.jsonl`` and the exchange
documents (results with their decisions, the hospitals' update manifests with their test-split
histograms). Figures are matplotlib PNGs embedded as base64, the page loads nothing from the
network (its Content-Security-Policy forbids it), and what a run did not produce is said to be
"not available in this run" rather than drawn.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure

from fedsilo.ops.calibration_view import calibration_html
from fedsilo.ops.personalization_report import (
    PersonalizationSummary,
    personalization_summary,
    summary_html,
)
from fedsilo.ops.privacy_report import privacy_html
from fedsilo.ops.status import read_update_manifest, site_auroc
from fl_core.config import FederationConfig
from fl_core.errors import ConfigError
from fl_core.exchange.histograms import class_histogram
from fl_core.exchange.manifests import RoundResult
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.uri import open_store
from fl_core.metrics import ClassHistogram, bin_centers
from fl_core.types import SiteId

CALIBRATION_GROUPS = 10
NOT_AVAILABLE = "not available in this run"


@dataclass(frozen=True)
class RunData:
    """What the report draws, read from a run folder."""

    run_dir: Path
    federation_id: str
    rows: list[dict[str, Any]]
    results: list[RoundResult]
    evaluation_round: int | None
    site_aurocs: dict[SiteId, float | None]  # None: one class in the site's test split
    positives: npt.NDArray[np.int64]
    negatives: npt.NDArray[np.int64]
    personalization: PersonalizationSummary | None = None


@dataclass
class ReportFigure:
    name: str
    title: str
    caption: str
    points: int  # data points drawn; the HTML carries it so a test can check every plot
    png: bytes = field(repr=False)


def _read_rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise ConfigError(f"{path} not found; RUN must be a run folder written by simulate")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def open_run_exchange(run_dir: Path, endpoint_url: str | None = None) -> Exchange:
    """The exchange a run folder used: its config's URI, else its ``exchange/`` folder."""
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise ConfigError(f"{config_path} not found; RUN must be a run folder written by simulate")
    config = FederationConfig.model_validate_json(config_path.read_text())
    uri = config.exchange.uri or (run_dir / "exchange").resolve().as_uri()
    store = open_store(uri, endpoint_url=endpoint_url or config.exchange.endpoint_url)
    return Exchange(store, config.federation_id)


def load_run(run_dir: Path, endpoint_url: str | None = None) -> RunData:
    rows = _read_rows(run_dir)
    exchange = open_run_exchange(run_dir, endpoint_url)
    results = []
    round_index = 1
    while (result := exchange.read_result(round_index)) is not None:
        results.append(result)
        round_index += 1
    evaluated = [r for r in results if r.evaluation is not None and r.accepted]
    final = next((r for r in reversed(evaluated) if r.task == "evaluate"), None)
    final = final or (evaluated[-1] if evaluated else None)
    site_aurocs: dict[SiteId, float | None] = {}
    pooled = ClassHistogram.empty(0)  # stays empty without an evaluated round
    if final is not None:
        for decision in final.accepted:
            manifest = read_update_manifest(exchange, final.round_index, decision.site_id)
            if manifest is None or manifest.evaluation is None:
                continue
            histogram = class_histogram(manifest.evaluation.histogram)
            pooled = histogram if pooled.positives.size == 0 else pooled + histogram
            site_aurocs[decision.site_id] = site_auroc(manifest)
    return RunData(
        run_dir=run_dir,
        federation_id=exchange.federation_id,
        rows=rows,
        results=results,
        evaluation_round=final.round_index if final else None,
        site_aurocs=dict(sorted(site_aurocs.items())),
        positives=pooled.positives,
        negatives=pooled.negatives,
        personalization=personalization_summary(exchange, final.round_index, site_aurocs)
        if final is not None
        else None,
    )


def calibration_points(
    positives: npt.NDArray[np.int64], negatives: npt.NDArray[np.int64], groups: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """(mean predicted risk, observed positive fraction, stays) per group of adjacent bins.

    Adjacent risk bins are merged into about ``groups`` groups of equal size (by stays), so
    that each point rests on enough stays; the predicted risk of a bin is its centre.
    """
    counts = positives + negatives
    total = int(counts.sum())
    if total == 0:
        empty = np.zeros(0)
        return empty, empty, np.zeros(0, np.int64)
    centers = bin_centers(counts.size)
    group_of_bin = np.minimum((np.cumsum(counts) - counts) * groups // total, groups - 1)
    predicted, observed, sizes = [], [], []
    for group in range(groups):
        members = (group_of_bin == group) & (counts > 0)
        size = int(counts[members].sum())
        if size == 0:
            continue
        predicted.append(float((centers[members] * counts[members]).sum() / size))
        observed.append(float(positives[members].sum() / size))
        sizes.append(size)
    return np.asarray(predicted), np.asarray(observed), np.asarray(sizes, np.int64)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _metrics_figure(data: RunData) -> ReportFigure:
    figure = Figure(figsize=(7, 3.6))
    axes = figure.add_subplot()
    rounds = [row["round"] for row in data.rows]
    points = 0
    for key, label, style in (("auroc", "AUROC", "o-"), ("auprc", "AUPRC", "s-")):
        pairs = [(r["round"], r[key]) for r in data.rows if r.get(key) is not None]
        if pairs:
            axes.plot(*zip(*pairs, strict=True), style, label=label)
            points += len(pairs)
    references: dict[str, list[tuple[int, float]]] = {}
    for row in data.rows:
        for name, value in (row.get("reference_auroc") or {}).items():
            if value is not None:
                references.setdefault(name, []).append((row["round"], value))
    for name, pairs in sorted(references.items()):
        axes.plot(*zip(*pairs, strict=True), ":", label=f"{name} score AUROC (reference)")
    axes.set_xlabel("round")
    axes.set_ylabel("pooled test metric")
    axes.set_xticks(rounds)
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    last = data.rows[-1] if data.rows else {}
    caption = (
        "Global model after each round, scored on the hospitals' pooled test splits from "
        "their summed risk histograms (no per-patient prediction leaves a hospital)."
    )
    if last.get("auroc") is not None:
        caption += f" Last round: AUROC {last['auroc']:.3f}, AUPRC {last['auprc']:.3f}."
    return ReportFigure("metrics", "AUROC and AUPRC per round", caption, points, _png(figure))


def _sites_figure(data: RunData) -> ReportFigure:
    defined = {s: v for s, v in data.site_aurocs.items() if v is not None}
    undefined = sorted(s for s, v in data.site_aurocs.items() if v is None)
    figure = Figure(figsize=(7, max(2.4, 0.28 * len(data.site_aurocs) + 1)))
    axes = figure.add_subplot()
    ordered = sorted(defined.items(), key=lambda item: item[1])
    if ordered:
        names = [s for s, _ in ordered]
        values = [v for _, v in ordered]
        colors = ["tab:red" if i == 0 else "tab:blue" for i in range(len(values))]
        axes.barh(names, values, color=colors, label="global model")
        pooled = data.rows[-1].get("auroc") if data.rows else None
        if pooled is not None:
            axes.axvline(pooled, color="black", linestyle="--", label=f"pooled {pooled:.3f}")
        axes.legend(loc="lower right", fontsize=8)
    axes.set_xlim(0, 1)
    axes.set_xlabel("AUROC on the hospital's own test split")
    axes.tick_params(axis="y", labelsize=7)
    round_text = f"round {data.evaluation_round}" if data.evaluation_round else "no round"
    if ordered:
        values_array = np.asarray([v for _, v in ordered])
        q1, q3 = np.percentile(values_array, [25, 75])
        spread = float(values_array.max() - values_array.min())
        caption = (
            f"Global model of the final evaluation ({round_text}) on each hospital's test "
            f"split. Worst hospital: {ordered[0][0]} ({ordered[0][1]:.3f}); best "
            f"{ordered[-1][0]} ({ordered[-1][1]:.3f}); spread {spread:.3f} "
            f"(interquartile range {q3 - q1:.3f})."
        )
    else:
        caption = f"No hospital reported a test histogram with both classes ({round_text})."
    if undefined:
        caption += f" AUROC undefined (one class in the test split): {', '.join(undefined)}."
    caption += (
        f" Local-only and fine-tuned models per hospital: {NOT_AVAILABLE} (the run trains "
        "only the federated model)."
    )
    return ReportFigure(
        "hospitals", "Per-hospital AUROC of the global model", caption, len(ordered), _png(figure)
    )


def _calibration_figure(data: RunData) -> ReportFigure:
    predicted, observed, sizes = calibration_points(
        data.positives, data.negatives, CALIBRATION_GROUPS
    )
    figure = Figure(figsize=(4.8, 4.4))
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    if predicted.size:
        axes.plot(predicted, observed, "o-", label="global model")
        top = float(max(predicted.max(), observed.max(), 0.05)) * 1.1
        axes.set_xlim(0, min(top, 1.0))
        axes.set_ylim(0, min(top, 1.0))
    axes.set_xlabel("predicted risk (mean in group)")
    axes.set_ylabel("observed fraction positive")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)
    total = int(sizes.sum())
    caption = (
        f"Calibration of the final global model from the summed test histograms: {total} stays "
        f"in {predicted.size} groups of adjacent risk bins of about equal size."
    )
    return ReportFigure(
        "calibration", "Calibration curve", caption, int(predicted.size), _png(figure)
    )


def _rejections_figure(data: RunData) -> ReportFigure:
    figure = Figure(figsize=(7, 3.0))
    axes = figure.add_subplot()
    rounds = [r.round_index for r in data.results]
    reasons = sorted({d.reason or "unspecified" for r in data.results for d in r.rejected})
    bottom = np.zeros(len(rounds))
    for reason in reasons:
        counts = np.asarray(
            [sum((d.reason or "unspecified") == reason for d in r.rejected) for r in data.results],
            float,
        )
        axes.bar(rounds, counts, bottom=bottom, label=reason)
        bottom += counts
    if not reasons:
        axes.bar(rounds, bottom, label="rejected (none)")
    accepted = [len(r.accepted) for r in data.results]
    axes.plot(rounds, accepted, "ko", label="accepted")
    axes.set_ylim(0, max([*accepted, *bottom.tolist(), 1]) + 1)
    axes.set_xticks(rounds)
    axes.set_xlabel("round (the last one evaluates the final model)")
    axes.set_ylabel("updates")
    axes.legend(loc="upper left", fontsize=8)
    total = int(bottom.sum())
    caption = (
        f"{total} update(s) rejected over {len(rounds)} rounds"
        + (f"; reasons: {', '.join(reasons)}." if reasons else ".")
        + " A rejected update never touches the aggregate; the table below gives each one."
    )
    return ReportFigure(
        "rejections", "Rejected updates per round", caption, len(rounds), _png(figure)
    )


def build_figures(data: RunData) -> list[ReportFigure]:
    return [
        _metrics_figure(data),
        _sites_figure(data),
        _calibration_figure(data),
        _rejections_figure(data),
    ]


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 980px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.8em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; margin-top: 0.4em; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.text { text-align: left; }
.na { color: #8a5a00; font-style: italic; }
"""

# Checks that every embedded figure decoded; a broken one is a console error the test sees.
_SCRIPT = """
window.addEventListener("load", function () {
  var ok = 0;
  document.querySelectorAll("figure img").forEach(function (img) {
    if (img.complete && img.naturalWidth > 0) { ok += 1; }
    else { console.error("figure did not load: " + img.alt); }
  });
  document.body.setAttribute("data-figures-loaded", String(ok));
});
"""


def _table(headers: list[str], rows: list[list[str]], text_columns: set[int]) -> str:
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


def render_html(data: RunData, figures: list[ReportFigure]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">",
        f"<title>fedsilo report: {html.escape(data.run_dir.name)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>fedsilo run {html.escape(data.run_dir.name)}</h1>",
        f"<p>Federation <b>{html.escape(data.federation_id)}</b>: {len(data.rows)} training "
        f"rounds, {len(data.site_aurocs)} hospitals in the final evaluation.</p>",
    ]
    for figure in figures:
        encoded = base64.b64encode(figure.png).decode()
        parts.append(
            f'<h2>{html.escape(figure.title)}</h2><figure id="fig-{figure.name}" '
            f'data-points="{figure.points}"><img alt="{html.escape(figure.title)}" '
            f'src="data:image/png;base64,{encoded}"><figcaption>'
            f"{html.escape(figure.caption)}</figcaption></figure>"
        )
        if figure.name == "metrics":
            parts.append(
                _table(
                    ["round", "AUROC", "AUPRC", "loss", "train loss", "accepted", "rejected", "s"],
                    [
                        [
                            _fmt(r.get(k))
                            for k in (
                                "round",
                                "auroc",
                                "auprc",
                                "loss",
                                "train_loss",
                                "sites_accepted",
                                "sites_rejected",
                                "seconds",
                            )
                        ]
                        for r in data.rows
                    ],
                    set(),
                )
            )
        if figure.name == "calibration":
            parts.append(calibration_html(data.rows, _table))
        if figure.name == "rejections":
            rejected = [
                [str(r.round_index), d.site_id, d.reason or "-", d.detail or "-"]
                for r in data.results
                for d in r.rejected
            ]
            parts.append(
                _table(["round", "site", "reason", "detail"], rejected, {1, 2, 3})
                if rejected
                else "<p>No update was rejected in this run.</p>"
            )
    parts.append(summary_html(data.personalization))
    parts += [
        privacy_html(data.results, _table),  # epsilon per hospital per round (privacy_report)
        f"<script>{_SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(
    run_dir: Path, out: Path, png_dir: Path | None = None, endpoint_url: str | None = None
) -> list[ReportFigure]:
    """Write the HTML page (and the figures as PNGs into ``png_dir``); returns the figures."""
    data = load_run(run_dir, endpoint_url)
    figures = build_figures(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(data, figures), encoding="utf-8")
    if png_dir is not None:
        png_dir.mkdir(parents=True, exist_ok=True)
        for figure in figures:
            (png_dir / f"{figure.name}.png").write_bytes(figure.png)
    return figures

"""The report's interactive figures (plotly): rounds, hospitals' funnel, calibration, rejections.

Every figure has a fixed height of at most ``MAX_HEIGHT_PX`` whatever the number of hospitals
(186 on the eICU demo, 208 on its twin), names each point on hover, and draws a legend entry
only for a trace it draws, so the legend always matches what is on the chart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import plotly.graph_objects as go

from fedsilo.engine.metrics_row import MetricsRow
from fedsilo.ops.report_stats import (
    FUNNEL_LEVELS,
    CalibrationGroup,
    SiteFigures,
    funnel_limits,
    outside_limits,
)
from fl_core.exchange.manifests import RoundResult

MAX_HEIGHT_PX = 560
FUNNEL_RATIO_CAP = 6.0
"""The funnel's y axis stops here; a hospital above it is drawn on the edge as a triangle."""

_LAYOUT: dict[str, Any] = {
    "template": "plotly_white",
    "margin": {"l": 60, "r": 20, "t": 30, "b": 50},
    "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
    "font": {"size": 12},
}


@dataclass(frozen=True)
class ReportFigure:
    name: str
    title: str
    caption: str
    points: int
    """Data points drawn; the page carries it so a test can check every plot has data."""
    figure: go.Figure = field(repr=False)


def _layout(figure: go.Figure, height: int, **extra: Any) -> go.Figure:
    figure.update_layout(**_LAYOUT, height=min(height, MAX_HEIGHT_PX), **extra)
    return figure


def metrics_figure(rows: Sequence[MetricsRow]) -> ReportFigure:
    figure = go.Figure()
    points = 0
    for label, scored_rows in (
        ("AUROC", [(r.round, r.auroc) for r in rows if r.auroc is not None]),
        ("AUPRC", [(r.round, r.auprc) for r in rows if r.auprc is not None]),
    ):
        if scored_rows:
            x, y = zip(*scored_rows, strict=True)
            figure.add_scatter(x=x, y=y, mode="lines+markers", name=f"{label} (global model)")
            points += len(scored_rows)
    references: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for name, value in row.reference_auroc.items():
            if value is not None:
                references.setdefault(name, []).append((row.round, value))
    for name, pairs in sorted(references.items()):
        x, y = zip(*pairs, strict=True)
        figure.add_scatter(
            x=x, y=y, mode="lines", line={"dash": "dot"}, name=f"AUROC of the {name} score"
        )
    _layout(figure, 380, xaxis_title="round", yaxis_title="pooled test metric")
    figure.update_yaxes(range=[0, 1])
    figure.update_xaxes(dtick=1)
    last = rows[-1] if rows else None
    caption = (
        "The global model after each round, scored on the hospitals' pooled test splits from "
        "their summed risk histograms (no per-patient prediction leaves a hospital)."
    )
    final = (("AUROC", last.auroc), ("AUPRC", last.auprc)) if last else ()
    scored = [f"{label} {value:.3f}" for label, value in final if value is not None]
    if scored:
        caption += f" Last round: {', '.join(scored)}."
    return ReportFigure("metrics", "Discrimination per round", caption, points, figure)


def funnel_figure(sites: Sequence[SiteFigures], evaluation_round: int | None) -> ReportFigure:
    """Observed / expected deaths against expected deaths, one point per hospital."""
    drawn = [s for s in sites if s.observed_expected is not None]
    figure = go.Figure()
    outside: list[SiteFigures] = []
    if drawn:
        expected = np.asarray([s.expected_deaths for s in drawn])
        grid = np.geomspace(max(expected.min() * 0.8, 1e-3), expected.max() * 1.25, 200)
        figure.add_hline(y=1.0, line={"color": "black", "width": 1})
        for level, dash in zip(FUNNEL_LEVELS, ("dash", "dot"), strict=True):
            lower, upper = funnel_limits(grid, level)
            label = f"{level:.1%} control limits".replace(".0%", "%")
            for index, limit in enumerate((upper, lower)):
                figure.add_scatter(
                    x=grid,
                    y=np.minimum(limit, FUNNEL_RATIO_CAP),
                    mode="lines",
                    line={"color": "grey", "dash": dash, "width": 1},
                    name=label,
                    legendgroup=label,
                    showlegend=index == 0,
                    hoverinfo="skip",
                )
        beyond = np.asarray(
            [outside_limits(s.deaths, s.expected_deaths, FUNNEL_LEVELS[-1]) for s in drawn]
        )
        outside = [s for s, out in zip(drawn, beyond, strict=True) if out]
        for mask, name, color in (
            (~beyond, "hospital within the 99.8% limits", "#1f77b4"),
            (beyond, "hospital outside the 99.8% limits", "#d62728"),
        ):
            chosen = [s for s, keep in zip(drawn, mask, strict=True) if keep]
            if not chosen:
                continue
            values = np.asarray([s.deaths / s.expected_deaths for s in chosen])
            figure.add_scatter(
                x=[s.expected_deaths for s in chosen],
                y=np.minimum(values, FUNNEL_RATIO_CAP),
                mode="markers",
                marker={
                    "color": color,
                    "size": 7,
                    "opacity": 0.75,
                    "symbol": ["triangle-up" if v > FUNNEL_RATIO_CAP else "circle" for v in values],
                },
                name=name,
                customdata=[
                    [s.site_id, s.stays, s.deaths, s.expected_deaths, s.deaths / s.expected_deaths]
                    for s in chosen
                ],
                hovertemplate="<b>%{customdata[0]}</b><br>%{customdata[1]} stays, "
                "%{customdata[2]} deaths<br>expected %{customdata[3]:.2f}<br>"
                "observed/expected %{customdata[4]:.2f}<extra></extra>",
            )
    _layout(
        figure,
        520,
        xaxis_title="expected deaths in the hospital's test split (log scale)",
        yaxis_title="observed / expected deaths",
    )
    figure.update_xaxes(type="log")
    figure.update_yaxes(range=[0, FUNNEL_RATIO_CAP * 1.02])
    round_text = f"round {evaluation_round}" if evaluation_round else "no round"
    caption = (
        f"Each point is one hospital's test split under the final global model ({round_text}): "
        "its observed deaths over the deaths the model expected (the sum of its predicted "
        "risks), against the expected deaths. The curves are the limits within which 95% and "
        "99.8% of hospitals would fall by chance if the model were right everywhere: small "
        "hospitals scatter widely and are not outliers for that. A triangle is a hospital "
        f"above {FUNNEL_RATIO_CAP:g} (hover for its value)."
    )
    if outside:
        names = ", ".join(s.site_id for s in sorted(outside, key=lambda s: -s.stays)[:8])
        more = f" and {len(outside) - 8} more" if len(outside) > 8 else ""
        caption += f" Outside the 99.8% limits: {names}{more}."
    elif drawn:
        caption += " No hospital lies outside the 99.8% limits."
    return ReportFigure(
        "hospitals", "Hospitals: observed against expected deaths", caption, len(drawn), figure
    )


def calibration_figure(groups: Sequence[CalibrationGroup]) -> ReportFigure:
    figure = go.Figure()
    top = max([0.05, *(g.predicted for g in groups), *(g.observed.high for g in groups)]) * 1.08
    top = min(top, 1.0)
    figure.add_scatter(
        x=[0, top],
        y=[0, top],
        mode="lines",
        line={"color": "grey", "dash": "dash"},
        name="perfect calibration",
        hoverinfo="skip",
    )
    if groups:
        figure.add_scatter(
            x=[g.predicted for g in groups],
            y=[g.observed.estimate for g in groups],
            mode="lines+markers",
            name="global model, with 95% interval",
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [g.observed.high - g.observed.estimate for g in groups],
                "arrayminus": [g.observed.estimate - g.observed.low for g in groups],
                "thickness": 1,
            },
            customdata=[[g.stays, g.deaths, g.observed.low, g.observed.high] for g in groups],
            hovertemplate="predicted %{x:.3f}, observed %{y:.3f}<br>%{customdata[0]} stays, "
            "%{customdata[1]} deaths<br>95% interval %{customdata[2]:.3f}-%{customdata[3]:.3f}"
            "<extra></extra>",
        )
    _layout(
        figure,
        460,
        xaxis_title="predicted risk (mean in group)",
        yaxis_title="observed death rate",
    )
    figure.update_xaxes(range=[0, top])
    figure.update_yaxes(range=[0, top])
    stays = sum(g.stays for g in groups)
    caption = (
        f"Calibration of the final global model from the summed test histograms: {stays} stays "
        f"in {len(groups)} groups of adjacent risk bins of about equal size; bars are Wilson "
        "95% intervals of the observed rate. The table below gives each group's stays and "
        "deaths."
    )
    return ReportFigure("calibration", "Calibration", caption, len(groups), figure)


def rejections_figure(results: Sequence[RoundResult]) -> ReportFigure:
    figure = go.Figure()
    rounds = [r.round_index for r in results]
    reasons = sorted({d.reason or "unspecified" for r in results for d in r.rejected})
    for reason in reasons:
        figure.add_bar(
            x=rounds,
            y=[sum((d.reason or "unspecified") == reason for d in r.rejected) for r in results],
            name=f"rejected: {reason}",
        )
    figure.add_scatter(
        x=rounds,
        y=[len(r.accepted) for r in results],
        mode="markers",
        marker={"color": "black"},
        name="accepted",
    )
    _layout(figure, 340, barmode="stack", xaxis_title="round", yaxis_title="updates")
    figure.update_xaxes(dtick=1)
    figure.update_yaxes(rangemode="tozero")
    total = sum(len(r.rejected) for r in results)
    caption = (
        f"{total} update(s) rejected over {len(rounds)} rounds (the last one evaluates the "
        "final model)"
        + (f"; reasons: {', '.join(reasons)}." if reasons else ".")
        + " A rejected update never touches the aggregate."
    )
    return ReportFigure("rejections", "Accepted and rejected updates", caption, len(rounds), figure)

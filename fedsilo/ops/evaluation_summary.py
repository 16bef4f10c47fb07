"""What ``fedsilo data evaluate`` keeps: ``summary.json`` and a page to read it, in ``--out``.

A cross-validation on the eICU demo takes minutes; its result is worth keeping beside the
terminal's tables, in a form a script reads (the JSON, also printed by ``--json``) and one a
person reads (``evaluation.html``, self-contained, no script).
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from fedsilo.ops.evaluate import CrossValidation, Scores

SUMMARY_FILE = "summary.json"
PAGE_FILE = "evaluation.html"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelFigures(_Frozen):
    """One model or yardstick over every fold: AUROC spread, out-of-fold AUROC, calibration."""

    model: str
    auroc_mean: float | None
    auroc_sd: float | None
    folds_scored: int
    out_of_fold_auroc: float | None
    brier: float | None
    ece: float | None
    intercept: float | None
    slope: float | None


class FoldFigures(_Frozen):
    fold: str
    test_stays: int
    test_deaths: int
    federated_auroc: float | None
    pooled_auroc: float | None
    seconds: float
    hospitals: int | None
    share_better_federated: float | None
    """Share of hospitals whose own test stays the federated model predicts better (Brier)
    than a model of their own; None without ``--local-only``."""
    hospitals_with_deaths: int | None = None
    share_better_with_deaths: float | None = None
    worst_decile_federated_brier: float | None = None
    worst_decile_local_brier: float | None = None
    """Mean Brier of each model over the tenth of hospitals the federation serves worst."""


class EvaluationSummary(_Frozen):
    data: str
    folds: int
    repeats: int
    rounds: int
    local_only: bool
    test_stays: int
    test_deaths: int
    seconds: float
    models: list[ModelFigures]
    per_fold: list[FoldFigures]
    kept_work_folders: bool


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def model_names(cv: CrossValidation, *, local_only: bool) -> list[str]:
    names = ["federated", "pooled", *(["local_only_mean"] if local_only else [])]
    return names + sorted({name for scores in cv.per_fold for name in scores.references})


def _fold(index: int, cv: CrossValidation, scores: Scores) -> FoldFigures:
    view = scores.hospitals
    return FoldFigures(
        fold=f"r{index // cv.folds}-f{index % cv.folds}",
        test_stays=scores.test_stays,
        test_deaths=scores.test_deaths,
        federated_auroc=scores.federated,
        pooled_auroc=scores.pooled,
        seconds=scores.seconds,
        hospitals=None if view is None else view.hospitals,
        share_better_federated=None if view is None else view.share_better,
        hospitals_with_deaths=None if view is None else view.with_deaths,
        share_better_with_deaths=None if view is None else view.share_better_with_deaths,
        worst_decile_federated_brier=None if view is None else view.worst_decile_federated_brier,
        worst_decile_local_brier=None if view is None else view.worst_decile_local_brier,
    )


def summarise(
    cv: CrossValidation,
    *,
    data: Path,
    rounds: int,
    local_only: bool,
    seconds: float,
    kept: bool,
) -> EvaluationSummary:
    models = []
    for name in model_names(cv, local_only=local_only):
        mean, sd, count = cv.spread(name)
        oof, _, pooled_over = cv.out_of_fold_spread(name)
        calibration = cv.out_of_fold_calibration_mean(name)
        models.append(
            ModelFigures(
                model="local-only" if name == "local_only_mean" else name,
                auroc_mean=_number(mean) if count else None,
                auroc_sd=_number(sd) if count else None,
                folds_scored=count,
                out_of_fold_auroc=_number(oof) if pooled_over else None,
                brier=calibration.get("brier"),
                ece=calibration.get("ece"),
                intercept=calibration.get("intercept"),
                slope=calibration.get("slope"),
            )
        )
    return EvaluationSummary(
        data=str(data),
        folds=cv.folds,
        repeats=cv.repeats,
        rounds=rounds,
        local_only=local_only,
        test_stays=sum(s.test_stays for s in cv.per_fold),
        test_deaths=sum(s.test_deaths for s in cv.per_fold),
        seconds=round(seconds, 1),
        models=models,
        per_fold=[_fold(i, cv, s) for i, s in enumerate(cv.per_fold)],
        kept_work_folders=kept,
    )


def _cell(value: float | int | None, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 980px; color: #222;
  padding: 0 1em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.6em 0; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child { text-align: left; }
"""


def evaluation_html(summary: EvaluationSummary) -> str:
    models = _table(
        [
            "model",
            "AUROC mean",
            "sd",
            "folds",
            "out-of-fold AUROC",
            "Brier",
            "ECE",
            "intercept",
            "slope",
        ],
        [
            [
                m.model,
                _cell(m.auroc_mean),
                _cell(m.auroc_sd, 3),
                str(m.folds_scored),
                _cell(m.out_of_fold_auroc),
                _cell(m.brier),
                _cell(m.ece),
                _cell(m.intercept, 2),
                _cell(m.slope, 2),
            ]
            for m in summary.models
        ],
    )
    folds = _table(
        [
            "fold",
            "test stays",
            "deaths",
            "federated AUROC",
            "pooled AUROC",
            "hospitals",
            "federated better",
            "with a death",
            "worst 10%: federated",
            "alone",
            "seconds",
        ],
        [
            [
                f.fold,
                str(f.test_stays),
                str(f.test_deaths),
                _cell(f.federated_auroc),
                _cell(f.pooled_auroc),
                _cell(f.hospitals),
                "n/a" if f.share_better_federated is None else f"{f.share_better_federated:.1%}",
                "n/a"
                if f.share_better_with_deaths is None
                else f"{f.share_better_with_deaths:.0%} of {f.hospitals_with_deaths}",
                _cell(f.worst_decile_federated_brier),
                _cell(f.worst_decile_local_brier),
                f"{f.seconds:.0f}",
            ]
            for f in summary.per_fold
        ],
    )
    intro = (
        f"{summary.folds}-fold cross-validation per hospital, {summary.repeats} deal(s), "
        f"{summary.rounds} rounds per federation, on {summary.data}: every hospital deals its "
        "own stays into folds, each fold is tested once by a federation trained on the others. "
        f"{summary.test_stays} test stays, {summary.test_deaths} deaths over all folds; "
        f"{summary.seconds:.0f} s in all."
    )
    notes = (
        "AUROC: mean and standard deviation over folds, and over every stay scored out of fold. "
        "Calibration out of fold: Brier score, expected calibration error, Cox intercept (0 when "
        "calibrated) and slope (1; under 1, risks too extreme). Federated better: the share of "
        "hospitals whose own test stays the federated model predicts with a lower Brier score "
        "than a model trained on their rows alone; with a death: the same over the hospitals "
        "with a death among their test stays; worst 10%: mean Brier over the tenth of "
        "hospitals where the federated model gains least."
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "style-src 'unsafe-inline'\">",
            "<title>fedsilo cross-validation</title>",
            f"<style>{_STYLE}</style></head><body>",
            "<h1>Cross-validation per hospital</h1>",
            f"<p>{html.escape(intro)}</p>",
            "<h2>Models and yardsticks</h2>",
            models,
            f"<p>{html.escape(notes)}</p>",
            "<h2>Folds</h2>",
            folds,
            "</body></html>",
        ]
    )


def write_summary(summary: EvaluationSummary, out: Path) -> tuple[Path, Path]:
    """``summary.json`` and ``evaluation.html`` in ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, page_path = out / SUMMARY_FILE, out / PAGE_FILE
    json_path.write_text(summary.model_dump_json(indent=2) + "\n", encoding="utf-8")
    page_path.write_text(evaluation_html(summary), encoding="utf-8")
    return json_path, page_path

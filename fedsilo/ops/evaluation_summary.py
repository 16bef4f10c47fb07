"""What ``fedsilo data evaluate`` keeps: ``summary.json`` and a page to read it, in ``--out``.

A cross-validation on the eICU demo takes minutes; its result is worth keeping beside the
terminal's tables, in a form a script reads (the JSON, also printed by ``--json``) and one a
person reads (``evaluation.html``, self-contained, no script).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from fedsilo.ops.evaluate import (
    ON_STAYS_OF,
    OWN_INTERCEPT,
    OWN_INTERCEPT_ON_STAYS_OF,
    CrossValidation,
    Scores,
)
from fedsilo.ops.evaluation_candidates import Candidate, choose_by_validation
from fedsilo.ops.hospital_verdict import MIN_VERDICT_EVENTS, HospitalVerdict, VerdictSummary
from fedsilo.ops.report_stats import Interval
from fl_core.config import StudyTraining

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
    candidate: str | None = None
    """The candidate this federated model is (``--candidate``); None for the yardsticks."""
    validation_log_loss: float | None = None
    """Candidates only: mean over folds of the log-loss on the validation rows (training
    rows), what the default is chosen by."""
    auroc_on_apache_stays: float | None = None
    """Mean over folds of the AUROC on the stays APACHE IVa scores: the federated models' and
    APACHE IVa's own, like for like (None where the data has no APACHE prediction)."""


class CandidateSummary(_Frozen):
    """One ``--candidate`` preset as it was evaluated."""

    name: str
    description: str
    feature_groups: tuple[str, ...] | None
    """None: every column of the prepared folder."""
    hidden_sizes: tuple[int, ...]
    linear_skip: bool = False
    """A linear term beside the network (wide and deep)."""
    logit_offset: str | None = None
    """The input the model started from as its logit (a prior model it customises)."""
    validation_log_loss: float | None


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


class HospitalRow(_Frozen):
    """One hospital's out-of-fold stays: each model's losses and the verdict."""

    site_id: str
    stays: int
    deaths: int
    federated_log_loss: float
    own_log_loss: float | None
    apache_log_loss: float | None
    federated_brier: float
    own_brier: float | None
    apache_brier: float | None
    log_loss_difference: tuple[float, float, float] | None
    """Federated - own per stay: mean, 95% low, high; None where not evaluable."""
    brier_difference: tuple[float, float, float] | None
    verdict: str
    """``not worse``, ``worse``, or why the hospital is not evaluable."""
    observed_expected: float | None
    """The federated model's observed / expected deaths (the funnel plot's y)."""


class HospitalVerdicts(_Frozen):
    """Does joining pay, per hospital (``fedsilo.ops.hospital_verdict``), first deal only."""

    min_events: int
    hospitals: int
    evaluable: int
    not_worse_share: float | None
    """Evaluable hospitals whose log-loss interval (federated - own) reaches 0 or below."""
    better_share: float | None
    """Evaluable hospitals whose mean log-loss is lower federated than alone (no interval)."""
    brier_not_worse_share: float | None
    rows: list[HospitalRow]


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
    hospital_verdicts: HospitalVerdicts | None = None
    candidates: list[CandidateSummary] = []
    chosen_by_validation: str | None = None
    """The candidate with the lowest validation log-loss (training rows only); None with a
    single candidate."""


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


APACHE = "apache"
"""The reference whose stays the like-for-like AUROC is taken on."""
MODEL_LABELS = {
    "local_only_mean": "local-only",
    "federated_uncalibrated": "federated, before recalibration",
    OWN_INTERCEPT: "federated, each hospital's own intercept",
}
_OUT_OF_FOLD_NAME = {"local_only_mean": "local_only"}
"""Per fold a hospital's own model has a mean AUROC; out of fold, every stay's risk."""


def _interval(found: Interval | None) -> tuple[float, float, float] | None:
    return None if found is None else (found.estimate, found.low, found.high)


def _verdict_text(hospital: HospitalVerdict) -> str:
    if not hospital.evaluable:
        return hospital.not_evaluable_reason()
    return "not worse" if hospital.not_worse else "worse"


def hospital_verdicts(found: VerdictSummary) -> HospitalVerdicts:
    ratios = {
        f.site_id: f.observed_expected.estimate
        for f in found.funnel
        if f.observed_expected is not None
    }
    judged = found.evaluable
    rows = [
        HospitalRow(
            site_id=h.site_id,
            stays=h.stays,
            deaths=h.deaths,
            federated_log_loss=h.federated.log_loss,
            own_log_loss=None if h.own is None else h.own.log_loss,
            apache_log_loss=None if h.apache is None else h.apache.log_loss,
            federated_brier=h.federated.brier,
            own_brier=None if h.own is None else h.own.brier,
            apache_brier=None if h.apache is None else h.apache.brier,
            log_loss_difference=_interval(h.log_loss_difference),
            brier_difference=_interval(h.brier_difference),
            verdict=_verdict_text(h),
            observed_expected=ratios.get(h.site_id),
        )
        for h in found.hospitals
    ]
    better = [h for h in judged if h.log_loss_difference and h.log_loss_difference.estimate <= 0]
    return HospitalVerdicts(
        min_events=MIN_VERDICT_EVENTS,
        hospitals=len(found.hospitals),
        evaluable=len(judged),
        not_worse_share=found.not_worse_share,
        better_share=len(better) / len(judged) if judged else None,
        brier_not_worse_share=found.brier_not_worse_share,
        rows=rows,
    )


def model_names(cv: CrossValidation, *, local_only: bool) -> list[str]:
    found = {name for repeat in cv.out_of_fold for name in repeat}
    adapted = [n for n in ("federated_uncalibrated", OWN_INTERCEPT) if n in found]
    names = ["federated", *adapted, "pooled", *(["local_only_mean"] if local_only else [])]
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


def _model_figures(
    cv: CrossValidation, name: str, label: str, candidate: str | None = None
) -> ModelFigures:
    mean, sd, count = cv.spread(name)
    like_for_like = {
        "federated": f"{ON_STAYS_OF}{APACHE}",
        OWN_INTERCEPT: f"{OWN_INTERCEPT_ON_STAYS_OF}{APACHE}",
        APACHE: APACHE,
    }.get(name)
    apache_mean, _, apache_count = cv.spread(like_for_like) if like_for_like else (0.0, 0.0, 0)
    oof, _, pooled_over = cv.out_of_fold_spread(_OUT_OF_FOLD_NAME.get(name, name))
    calibration = cv.out_of_fold_calibration_mean(_OUT_OF_FOLD_NAME.get(name, name))
    return ModelFigures(
        model=label,
        auroc_mean=_number(mean) if count else None,
        auroc_sd=_number(sd) if count else None,
        folds_scored=count,
        out_of_fold_auroc=_number(oof) if pooled_over else None,
        brier=calibration.get("brier"),
        ece=calibration.get("ece"),
        intercept=calibration.get("intercept"),
        slope=calibration.get("slope"),
        candidate=candidate,
        validation_log_loss=cv.validation_loss() if candidate is not None else None,
        auroc_on_apache_stays=_number(apache_mean) if apache_count else None,
    )


def candidate_label(name: str) -> str:
    return f"federated: {name}"


def summarise(
    cv: CrossValidation,
    *,
    data: Path,
    rounds: int,
    local_only: bool,
    seconds: float,
    kept: bool,
    verdicts: VerdictSummary | None = None,
    candidates: Sequence[tuple[Candidate, CrossValidation]] = (),
    training: StudyTraining | None = None,
) -> EvaluationSummary:
    """The summary of ``cv``; with several ``candidates`` (``cv`` being the first one's), a
    federated row for each, the primary's yardstick rows after them."""
    several = len(candidates) > 1
    primary = candidates[0][0].name if candidates else None
    models = (
        [_model_figures(c, "federated", candidate_label(k.name), k.name) for k, c in candidates]
        if several
        else []
    )
    for name in model_names(cv, local_only=local_only):
        if several and name == "federated":
            continue
        label = MODEL_LABELS.get(name, name)
        models.append(_model_figures(cv, name, label, primary if name == "federated" else None))
    configured = training or StudyTraining()
    summaries = [
        CandidateSummary(
            name=k.name,
            description=k.description,
            feature_groups=k.feature_groups,
            hidden_sizes=configured.hidden_sizes if k.hidden_sizes is None else k.hidden_sizes,
            linear_skip=configured.linear_skip if k.linear_skip is None else k.linear_skip,
            logit_offset=k.logit_offset or configured.logit_offset,
            validation_log_loss=c.validation_loss(),
        )
        for k, c in candidates
    ]
    chosen = (
        choose_by_validation({c.name: c.validation_log_loss for c in summaries})
        if several
        else None
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
        hospital_verdicts=None if verdicts is None else hospital_verdicts(verdicts),
        candidates=summaries,
        chosen_by_validation=chosen,
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
            "validation log-loss",
            "AUROC mean on APACHE's stays",
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
                _cell(m.validation_log_loss),
                _cell(m.auroc_on_apache_stays),
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
            "seconds",
        ],
        [
            [
                f.fold,
                str(f.test_stays),
                str(f.test_deaths),
                _cell(f.federated_auroc),
                _cell(f.pooled_auroc),
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
        "calibrated) and slope (1; under 1, risks too extreme). The federated model is "
        "published recalibrated (Platt scaling fitted on the hospitals' summed validation "
        "histograms); its row before recalibration is the same model without it."
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
            *candidates_html(summary),
            "<h2>Folds</h2>",
            folds,
            *hospitals_html(summary.hospital_verdicts),
            "</body></html>",
        ]
    )


def candidates_text(summary: EvaluationSummary) -> str:
    """How the candidates were compared and which one the training-rows rule picks."""
    if not summary.chosen_by_validation:
        return ""
    return (
        "Every candidate was trained and tested on the same folds. The rule for the default "
        "looks at training rows only: the lowest mean log-loss of the published federated "
        "model on the folds' validation rows. By that rule: "
        f"{summary.chosen_by_validation}. The AUROCs above are for reading, not for choosing."
    )


def network_text(candidate: CandidateSummary) -> str:
    """The candidate's network in words: its hidden layers, the linear term, its start."""
    parts = [", ".join(str(h) for h in candidate.hidden_sizes) or "none (logistic)"]
    if candidate.linear_skip and candidate.hidden_sizes:
        parts.append("+ linear term")
    if candidate.logit_offset:
        parts.append(f"started from {candidate.logit_offset}")
    return " ".join(parts)


def candidates_html(summary: EvaluationSummary) -> list[str]:
    if len(summary.candidates) < 2:
        return []
    table = _table(
        ["candidate", "features", "network", "validation log-loss", "what it is"],
        [
            [
                c.name,
                "every column" if c.feature_groups is None else " + ".join(c.feature_groups),
                network_text(c),
                _cell(c.validation_log_loss),
                c.description,
            ]
            for c in summary.candidates
        ],
    )
    return ["<h2>Candidates</h2>", table, f"<p>{html.escape(candidates_text(summary))}</p>"]


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def verdict_headline(verdicts: HospitalVerdicts) -> str:
    return (
        f"{verdicts.evaluable} of {verdicts.hospitals} hospitals evaluable (at least "
        f"{verdicts.min_events} deaths and {verdicts.min_events} survivors over their stays out "
        f"of fold). Joining is not worse, within the 95% interval of the log-loss difference, "
        f"for {_share(verdicts.not_worse_share)} of them (Brier: "
        f"{_share(verdicts.brier_not_worse_share)}); the federated model's mean log-loss is "
        f"lower than their own model's for {_share(verdicts.better_share)}."
    )


def difference_text(value: tuple[float, float, float] | None) -> str:
    """A difference with its interval: ``+0.123 (-0.456 to +0.789)``."""
    return "n/a" if value is None else f"{value[0]:+.3f} ({value[1]:+.3f} to {value[2]:+.3f})"


def hospitals_html(verdicts: HospitalVerdicts | None) -> list[str]:
    if verdicts is None:
        return []
    rows = [
        [
            r.site_id,
            str(r.stays),
            str(r.deaths),
            _cell(r.federated_log_loss, 3),
            _cell(r.own_log_loss, 3),
            _cell(r.apache_log_loss, 3),
            difference_text(r.log_loss_difference),
            difference_text(r.brier_difference),
            r.verdict,
        ]
        for r in sorted(verdicts.rows, key=lambda r: (r.log_loss_difference is None, -r.deaths))
        if r.log_loss_difference is not None
    ]
    table = _table(
        [
            "hospital",
            "stays",
            "deaths",
            "log-loss federated",
            "own",
            "APACHE",
            "federated - own (95% CI)",
            "Brier federated - own",
            "verdict",
        ],
        rows,
    )
    note = (
        "Over each hospital's stays across the folds of the first deal. A hospital with fewer "
        "deaths or survivors is not evaluable, and not counted: a model of its own that "
        "predicts no risk wins on stays without a death by construction. The funnel plot of "
        f"the federated model's observed against expected deaths per hospital is {FUNNEL_FILE}."
    )
    return [
        "<h2>Hospitals: federated against a model of their own</h2>",
        f"<p>{html.escape(verdict_headline(verdicts))}</p>",
        table,
        f"<p>{html.escape(note)}</p>",
    ]


FUNNEL_FILE = "hospitals_funnel.html"


def write_funnel(verdicts: VerdictSummary, out: Path) -> Path:
    """The funnel plot (``report_figures.funnel_figure``) of the out-of-fold risks, a page of
    its own: it needs plotly's script, which ``evaluation.html`` does not run."""
    from fedsilo.ops.report_figures import funnel_figure  # plotly: only when written

    figure = funnel_figure(verdicts.funnel, None)
    figure.figure.update_layout(
        title="Observed / expected deaths per hospital, federated model, out of fold"
    )
    path = out / FUNNEL_FILE
    figure.figure.write_html(path, include_plotlyjs=True, full_html=True)
    return path


def write_summary(
    summary: EvaluationSummary, out: Path, verdicts: VerdictSummary | None = None
) -> tuple[Path, Path]:
    """``summary.json`` and ``evaluation.html`` in ``out`` (and the funnel page with
    ``verdicts``); returns the first two paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, page_path = out / SUMMARY_FILE, out / PAGE_FILE
    json_path.write_text(summary.model_dump_json(indent=2) + "\n", encoding="utf-8")
    page_path.write_text(evaluation_html(summary), encoding="utf-8")
    if verdicts is not None:
        write_funnel(verdicts, out)
    return json_path, page_path

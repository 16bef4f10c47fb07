"""Global versus fine-tuned AUROC per hospital, from the final round's update manifests.

With ``personalisation.finetune_epochs > 0`` or ``personalisation.local_intercept`` every
hospital's answer to the final round carries two histograms of its test split: the final
global model's and its adapted ("fine-tuned") copy's (``EvaluationReport.finetuned``). Per
hospital the AUROC of each comes from its own histogram (``None``, shown "n/a", for a test
split with one class); the pooled figures come from the summed histograms, as every other
pooled metric (docs/design.md, step 6).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass

from fedsilo.engine.final_model import final_round
from fedsilo.ops.status import read_update_manifest
from fl_core.exchange.histograms import class_histogram
from fl_core.exchange.protocol import Exchange
from fl_core.metrics import ClassHistogram, auroc_from_histogram
from fl_core.types import SiteId


@dataclass(frozen=True)
class SitePersonalisation:
    site_id: SiteId
    num_examples: int
    global_auroc: float | None
    finetuned_auroc: float | None


@dataclass(frozen=True)
class PersonalisationSummary:
    round_index: int
    sites: list[SitePersonalisation]
    pooled_global_auroc: float | None
    pooled_finetuned_auroc: float | None

    @property
    def improved_sites(self) -> int:
        """Hospitals whose own test AUROC rose with fine-tuning (both defined)."""
        return sum(
            1
            for s in self.sites
            if s.global_auroc is not None
            and s.finetuned_auroc is not None
            and s.finetuned_auroc > s.global_auroc
        )


def personalisation_summary(
    exchange: Exchange, round_index: int, site_ids: Iterable[SiteId]
) -> PersonalisationSummary | None:
    """The summary of one (final) round, or None when no hospital reported a fine-tuned model.

    A manifest whose two histograms differ in bins is skipped (the aggregator checks only the
    global one), so a malformed answer can never break a report.
    """
    sites: list[SitePersonalisation] = []
    pooled_global: ClassHistogram | None = None
    pooled_finetuned: ClassHistogram | None = None
    for site_id in site_ids:
        manifest = read_update_manifest(exchange, round_index, site_id)
        if manifest is None or manifest.evaluation is None:
            continue
        finetuned_doc = manifest.evaluation.finetuned
        if finetuned_doc is None:
            continue
        global_hist = class_histogram(manifest.evaluation.histogram)
        finetuned_hist = class_histogram(finetuned_doc.histogram)
        if global_hist.positives.size != finetuned_hist.positives.size:
            continue
        if pooled_global is None or pooled_finetuned is None:
            pooled_global, pooled_finetuned = global_hist, finetuned_hist
        elif pooled_global.positives.size == global_hist.positives.size:
            pooled_global = pooled_global + global_hist
            pooled_finetuned = pooled_finetuned + finetuned_hist
        else:
            continue
        sites.append(
            SitePersonalisation(
                site_id=site_id,
                num_examples=manifest.evaluation.num_examples,
                global_auroc=auroc_from_histogram(global_hist),
                finetuned_auroc=auroc_from_histogram(finetuned_hist),
            )
        )
    if not sites or pooled_global is None or pooled_finetuned is None:
        return None
    return PersonalisationSummary(
        round_index=round_index,
        sites=sorted(sites, key=lambda s: s.site_id),
        pooled_global_auroc=auroc_from_histogram(pooled_global),
        pooled_finetuned_auroc=auroc_from_histogram(pooled_finetuned),
    )


def format_auroc(value: float | None) -> str:
    """Four decimals, or "n/a" where a test split has one class (AUROC undefined)."""
    return "n/a" if value is None else f"{value:.4f}"


def summary_lines(summary: PersonalisationSummary) -> list[str]:
    """Plain-text lines for the simulate summary: pooled figures, then one line per hospital."""
    defined = [
        s for s in summary.sites if s.global_auroc is not None and s.finetuned_auroc is not None
    ]
    lines = [
        f"personalisation: pooled test AUROC global {format_auroc(summary.pooled_global_auroc)}"
        f" -> fine-tuned {format_auroc(summary.pooled_finetuned_auroc)}; fine-tuning helped "
        f"{summary.improved_sites} of {len(defined)} hospitals with both classes in their test "
        "split"
    ]
    for site in summary.sites:
        lines.append(
            f"  {site.site_id:<24} test n={site.num_examples:<6} global "
            f"{format_auroc(site.global_auroc)}  fine-tuned {format_auroc(site.finetuned_auroc)}"
        )
    return lines


def summary_html(summary: PersonalisationSummary | None) -> str:
    """The report's section (its table has one row per hospital, then the pooled row)."""
    heading = "<h2>Personalisation: global versus fine-tuned AUROC per hospital</h2>"
    if summary is None:
        return (
            f'{heading}<p class="na" id="personalisation">Fine-tuned AUROC: not available in '
            "this run (personalisation.finetune_epochs was 0 and local_intercept off).</p>"
        )
    rows = "".join(
        f'<tr><td class="text">{html.escape(s.site_id)}</td><td>{s.num_examples}</td>'
        f"<td>{format_auroc(s.global_auroc)}</td><td>{format_auroc(s.finetuned_auroc)}</td></tr>"
        for s in summary.sites
    )
    pooled = (
        f'<tr><td class="text"><b>pooled</b></td>'
        f"<td>{sum(s.num_examples for s in summary.sites)}</td>"
        f"<td>{format_auroc(summary.pooled_global_auroc)}</td>"
        f"<td>{format_auroc(summary.pooled_finetuned_auroc)}</td></tr>"
    )
    return (
        f"{heading}<p>Round {summary.round_index}: each hospital fine-tuned the final global "
        "model on its own training split and scored both on its test split; the fine-tuned "
        'weights never left the hospital. "n/a": a test split with one class.</p>'
        '<table id="personalisation"><tr><th>hospital</th><th>test stays</th>'
        f"<th>global AUROC</th><th>fine-tuned AUROC</th></tr>{rows}{pooled}</table>"
    )


def simulation_summary_lines(exchange: Exchange, rounds: int) -> list[str]:
    """What ``fedsilo simulate`` prints after its table (nothing when personalisation was off)."""
    final = exchange.read_result(final_round(exchange, rounds))  # early stopping may end sooner
    if final is None:
        return []
    summary = personalisation_summary(
        exchange, final.round_index, [d.site_id for d in final.accepted]
    )
    return [] if summary is None else summary_lines(summary)

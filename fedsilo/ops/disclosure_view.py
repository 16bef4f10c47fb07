"""What the hospitals' disclosure floors kept out of each round's metrics, for people.

Read from ``result.json`` alone (``withheld_evaluations``, ``evaluation.masked_sites``): a
hospital whose test split is below its floor either withholds its evaluation (the round's
metrics leave it out) or, under secure aggregation, adds it to the masked sum only (the
metrics include it; nobody sees it alone). Shown so that a smaller pooled cohort is explained
rather than mistaken for hospitals that did not answer.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from fedsilo.ops.privacy_report import TableRenderer
from fl_core.disclosure import FloorRule
from fl_core.exchange.manifests import RoundResult

RULES: tuple[FloorRule, ...] = ("min_stays", "min_events")


def _masked(result: RoundResult) -> int:
    return result.evaluation.masked_sites if result.evaluation is not None else 0


def withheld_text(result: RoundResult) -> str | None:
    """One line about a round, or None when no floor held anything of it back."""
    parts = []
    if result.withheld_evaluations:
        counts = ", ".join(f"{rule} {n}" for rule, n in sorted(result.withheld_evaluations.items()))
        parts.append(f"evaluations withheld by disclosure floors: {counts}")
    if masked := _masked(result):
        parts.append(f"counted only in the masked sum: {masked}")
    return f"round {result.round_index}: " + "; ".join(parts) if parts else None


def latest_withheld(results: Sequence[RoundResult]) -> str | None:
    """The newest round's line (``results`` newest first, as ``fedsilo status`` reads them)."""
    return next((text for result in results if (text := withheld_text(result))), None)


def withheld_html(results: Sequence[RoundResult], table: TableRenderer) -> str:
    """The report's section: one row per round a floor touched; empty when none did."""
    rows = [
        [
            str(r.round_index),
            *(str(r.withheld_evaluations.get(rule, 0)) for rule in RULES),
            str(_masked(r)),
            str(r.evaluation.num_sites if r.evaluation is not None else 0),
        ]
        for r in results
        if r.withheld_evaluations or _masked(r)
    ]
    if not rows:
        return ""
    headers = [
        "round",
        "withheld: min_stays",
        "withheld: min_events",
        "in the masked sum only",
        "hospitals in the metrics",
    ]
    intro = (
        "<h2>Disclosure floors</h2><p>"
        + html.escape(
            "Hospitals whose test split is below their site policy's disclosure floor: a "
            "withheld evaluation is not in the round's metrics; one in the masked sum is, "
            "though no one saw it alone."
        )
        + "</p>"
    )
    return intro + table(headers, rows, set())

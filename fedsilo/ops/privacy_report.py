"""The report's privacy section: epsilon spent per hospital per round, DP-FedAvg's epsilon,
and the rounds hospitals declined (e.g. their budget would have been exceeded).

Built from ``result.json`` alone (``privacy`` and ``declined``), so it shows what the
aggregator recorded, round by round.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

from fl_core.exchange.manifests import RoundResult
from fl_core.exchange.protocol import Exchange

NOT_AVAILABLE = "not available in this run"
TableRenderer = Callable[[list[str], list[list[str]], set[int]], str]


def _eps(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def epsilon_table(results: Sequence[RoundResult]) -> tuple[list[str], list[list[str]]]:
    """Rows: one per hospital (DP-SGD epsilon so far), then DP-FedAvg; columns: rounds."""
    with_privacy = [r for r in results if r.privacy is not None]
    headers = ["hospital", *(f"r{r.round_index}" for r in with_privacy)]
    sites = sorted({s for r in with_privacy if r.privacy for s in r.privacy.site_epsilon})
    rows = [
        [site, *(_eps(r.privacy.site_epsilon.get(site)) for r in with_privacy if r.privacy)]
        for site in sites
    ]
    if any(r.privacy and r.privacy.dp_fedavg_epsilon is not None for r in with_privacy):
        rows.append(
            [
                "model (DP-FedAvg)",
                *(_eps(r.privacy.dp_fedavg_epsilon) for r in with_privacy if r.privacy),
            ]
        )
    return headers, rows


def privacy_html(results: Sequence[RoundResult], table: TableRenderer) -> str:
    """The section: a note when no DP ran, else the epsilon table and the declined rounds."""
    title = "<h2>Privacy budget (epsilon) per hospital</h2>"
    headers, rows = epsilon_table(results)
    if not rows:
        return (
            f'{title}<p class="na" id="epsilon">Epsilon per hospital: {NOT_AVAILABLE}. This run '
            "used no differential privacy, so no privacy budget was spent or accounted.</p>"
        )
    deltas = sorted(
        {
            f"{r.privacy.dp_fedavg_delta:g}"
            for r in results
            if r.privacy and r.privacy.dp_fedavg_delta
        }
    )
    note = (
        "DP-SGD epsilon spent so far by each hospital (sample-level, at its own delta) after "
        "each round; the last row is the client-level epsilon of the model under DP-FedAvg"
        + (f" (delta {', '.join(deltas)})" if deltas else "")
        + ". '-': the hospital did not answer that round."
    )
    declined = [
        [str(r.round_index), d.site_id, d.reason or "-", d.detail or "-"]
        for r in results
        for d in r.declined
    ]
    parts = [title, f'<p id="epsilon">{html.escape(note)}</p>', table(headers, rows, {0})]
    parts.append(
        table(["round", "site", "declined because", "detail"], declined, {1, 2, 3})
        if declined
        else "<p>No hospital declined a round.</p>"
    )
    return "\n".join(parts)


def epsilon_summary(results: Sequence[RoundResult]) -> list[str]:
    """Lines printed at the end of a run: each hospital's DP-SGD epsilon spent, DP-FedAvg's.

    The newest value the results record for each; no line when the run used no DP.
    """
    spent: dict[str, float] = {}
    model: tuple[float, float | None] | None = None
    for result in results:  # oldest first: later rounds overwrite
        if result.privacy is None:
            continue
        spent.update(result.privacy.site_epsilon)
        if result.privacy.dp_fedavg_epsilon is not None:
            model = (result.privacy.dp_fedavg_epsilon, result.privacy.dp_fedavg_delta)
    lines = []
    if spent:
        pairs = ", ".join(f"{site} {epsilon:.2f}" for site, epsilon in sorted(spent.items()))
        lines.append(f"privacy: DP-SGD epsilon spent per hospital (sample-level): {pairs}")
    if model is not None:
        delta = "" if model[1] is None else f" (delta {model[1]:g})"
        lines.append(
            f"privacy: DP-FedAvg epsilon of the model (client-level): {model[0]:.2f}{delta}"
        )
    return lines


def read_results(exchange: Exchange) -> list[RoundResult]:
    """Every round's result.json, oldest first, up to the first missing one."""
    results = []
    round_index = 1
    while (result := exchange.read_result(round_index)) is not None:
        results.append(result)
        round_index += 1
    return results

"""What the run commands print: the per-round table, privacy spent, personalisation, notes.

Two consoles: progress and notes go to stderr, results to stdout (so a script can capture
the tables without the progress bars).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fedsilo.engine.metrics_row import MetricsRow
    from fl_core.config import FederationConfig
    from fl_core.exchange.protocol import Exchange

console = Console(stderr=True)
stdout = Console()


def fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:.4f}"


def metrics_table(rows: Sequence[MetricsRow]) -> Table:
    """Per-round metrics, with the yardsticks on the same test stays (APACHE IVa, Bayes)."""
    references = sorted({name for row in rows for name in row.reference_auroc})
    title = "federated rounds" + (
        f" (yardstick AUROC on the same stays: {', '.join(references)})" if references else ""
    )
    table = Table(title=title, caption="acc/rej: updates accepted/rejected; s: round seconds")
    for column in ("round", "AUROC", "AUPRC", "loss", "acc", "rej", "s"):
        table.add_column(column, justify="right")
    for name in references:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(
            str(row.round),
            fmt(row.auroc),
            fmt(row.auprc),
            fmt(row.loss),
            str(row.sites_accepted),
            str(row.sites_rejected),
            f"{row.seconds:.2f}",
            *(fmt(row.reference_auroc.get(name)) for name in references),
        )
    return table


def _exchange(federation: FederationConfig, exchange_uri: str) -> Exchange:
    from fl_core.exchange.protocol import Exchange
    from fl_core.exchange.uri import open_store

    store = open_store(exchange_uri, endpoint_url=federation.exchange.endpoint_url)
    return Exchange(store, federation.federation_id)


def print_personalisation(federation: FederationConfig, exchange_uri: str) -> None:
    """Per-hospital global vs adapted AUROC, when hospitals adapted it (personalisation)."""
    if not federation.personalisation.adapts:
        return
    from fedsilo.ops.personalisation_report import simulation_summary_lines

    exchange = _exchange(federation, exchange_uri)
    for line in simulation_summary_lines(exchange, federation.rounds):
        stdout.print(line, highlight=False, markup=False, soft_wrap=True)


def print_privacy(federation: FederationConfig, exchange_uri: str) -> None:
    """Epsilon spent per hospital (DP-SGD) and by the model (DP-FedAvg), when DP ran.

    Read from the results, not the config: under ``server run`` the hospitals choose their
    own DP-SGD (``client run --dp-target-epsilon``), which the aggregator's config never says.
    """
    from fedsilo.ops.privacy_report import epsilon_summary, read_results

    for line in epsilon_summary(read_results(_exchange(federation, exchange_uri))):
        stdout.print(line, highlight=False, markup=False, soft_wrap=True)


def fit_strategy(federation: FederationConfig, hospitals: int | None) -> FederationConfig:
    """The strategy's quorum fitted to the federation; each change is said on stderr."""
    from fedsilo.engine.secagg_quorum import fit_secagg_quorum
    from fedsilo.engine.strategy_fit import fit_strategy as fit

    fitted, notes = fit(federation, hospitals)
    fitted, secagg_notes = fit_secagg_quorum(fitted, hospitals)
    for note in [*notes, *secagg_notes]:
        console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    return fitted


def printed_exchange(uri: str) -> str:
    """The exchange URI as a person reads it: the run's own folder is said in words.

    ``?durable=false`` (no fsync per write: the run's own exchange lives and dies with the
    run) means nothing to a reader; the plain URI opens the same exchange for ``status``.
    """
    plain, _, query = uri.partition("?")
    if query == "durable=false":
        return f"{plain} (the run's own folder, written without fsync)"
    return uri

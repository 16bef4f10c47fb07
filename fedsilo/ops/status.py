"""What ``fedsilo status`` shows: a snapshot of one federation read from its exchange.

Everything comes from the exchange documents (state, manifests, results, registry, the
hospitals' update manifests), so the same code works over a local folder and over S3, and
it shows only counts, reasons and metrics: never a tensor or a patient's row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from fedsilo.ops.disclosure_view import latest_withheld
from fedsilo.ops.skipped_documents import SkippedRow, skipped_rows
from fl_core.errors import ExchangeError
from fl_core.exchange.histograms import class_histogram
from fl_core.exchange.manifests import RoundResult, UpdateManifest
from fl_core.exchange.protocol import Exchange
from fl_core.metrics import auroc_from_histogram
from fl_core.types import RoundIndex, SiteId
from fl_server.answer_keys import RoundKeys

_LOOKBACK_ROUNDS = 50  # how far back a hospital's last rejection and AUROC are searched


@dataclass(frozen=True)
class SiteStatus:
    site_id: SiteId
    registration: str  # pending / active / revoked, or "-" without a registry entry
    state: str  # what the hospital is doing now (``site_state``)
    invited: bool
    answered: bool
    decision: str  # accepted / rejected / "-" (not decided yet in the current round)
    last_rejection: str | None  # "round N: reason"
    epsilon: float | None  # DP-SGD epsilon spent (newest result.json); None without DP-SGD
    last_auroc: float | None
    last_auroc_round: RoundIndex | None


@dataclass(frozen=True)
class FederationStatus:
    federation_id: str
    exchange: str
    round_index: RoundIndex | None
    task: str | None
    phase: str
    deadline_in_s: float | None
    message: str | None
    sites: list[SiteStatus]
    dp_fedavg_epsilon: float | None = None  # client-level epsilon of the model so far
    final: bool = False  # the current round is the final evaluation (after the last training)
    foreign_keys: int = 0  # keys in the current round's updates that are nobody's answer
    foreign_key_samples: tuple[str, ...] = ()
    skipped: tuple[SkippedRow, ...] = ()
    """Registrations and pending sites' preflight reports skipped as malformed."""
    withheld: str | None = None
    """The newest round's evaluations that disclosure floors kept out of the clear."""

    @property
    def holds_nothing(self) -> bool:
        """No state, round, registration or skipped document: a wrong id or exchange."""
        return (
            self.round_index is None
            and self.phase == "not started"
            and not (self.sites or self.skipped)
        )

    @property
    def ended(self) -> bool:
        """The federation is over: its final evaluation closed, or a round failed.

        Between two rounds the phase is ``done`` for a moment too, so that alone is no end.
        """
        return self.phase == "failed" or (self.phase == "done" and self.final)

    @property
    def training_round(self) -> RoundIndex | None:
        """The last training round: the final evaluation is one exchange round past it."""
        if self.round_index is None:
            return None
        return self.round_index - 1 if self.final else self.round_index


def site_state(
    registration: str, invited: bool, answered: bool, decision: str, phase: str, final: bool
) -> str:
    """One word for what a hospital is doing, from its registration and the current round."""
    if registration in ("pending", "revoked"):
        return registration
    if phase == "not started":
        return "waiting"
    if not invited:
        return "not invited"  # e.g. activated after the round opened: it joins the next one
    if phase == "failed":
        return "round failed"
    if phase == "collecting":
        if decision != "-":
            return decision
        if answered:
            return "answered"
        return "evaluating" if final else "training"
    if final:
        return "finished" if decision == "accepted" else f"finished ({decision})"
    return decision


def site_auroc(manifest: UpdateManifest) -> float | None:
    """AUROC of the global model on one hospital's own test histogram (None with one class)."""
    if manifest.evaluation is None:
        return None
    return auroc_from_histogram(class_histogram(manifest.evaluation.histogram))


def read_update_manifest(
    exchange: Exchange, round_index: RoundIndex, site_id: SiteId
) -> UpdateManifest | None:
    """A hospital's update manifest, or None if absent or malformed (status never fails on it)."""
    try:
        data = exchange.read_update_manifest_bytes(round_index, site_id)
        return UpdateManifest.model_validate_json(data)
    except (ExchangeError, ValidationError):  # absent (ObjectNotFoundError) or unreadable
        return None


def _last_rejections(results: list[RoundResult]) -> dict[SiteId, str]:
    found: dict[SiteId, str] = {}
    for result in results:  # newest first
        for decision in result.rejected:
            found.setdefault(
                decision.site_id, f"round {result.round_index}: {decision.reason or 'rejected'}"
            )
        for decision in result.declined:  # the hospital's own choice: its budget or policy
            found.setdefault(
                decision.site_id, f"round {result.round_index}: declined: {decision.reason}"
            )
    return found


def _last_epsilons(results: list[RoundResult]) -> dict[SiteId, float]:
    """Each hospital's DP-SGD epsilon as the newest result that names it records."""
    found: dict[SiteId, float] = {}
    for result in results:  # newest first
        if result.privacy is not None:
            for site_id, epsilon in result.privacy.site_epsilon.items():
                found.setdefault(site_id, epsilon)
    return found


def _dp_fedavg_epsilon(results: list[RoundResult]) -> float | None:
    for result in results:  # newest first
        if result.privacy is not None and result.privacy.dp_fedavg_epsilon is not None:
            return result.privacy.dp_fedavg_epsilon
    return None


def _last_aurocs(
    exchange: Exchange, sites: list[SiteId], newest: RoundIndex
) -> dict[SiteId, tuple[float, RoundIndex]]:
    found: dict[SiteId, tuple[float, RoundIndex]] = {}
    for site_id in sites:
        for round_index in range(newest, max(newest - _LOOKBACK_ROUNDS, 0), -1):
            manifest = read_update_manifest(exchange, round_index, site_id)
            value = site_auroc(manifest) if manifest is not None else None
            if value is not None:
                found[site_id] = (value, round_index)
                break
    return found


def collect_status(exchange: Exchange, now: float | None = None) -> FederationStatus:
    """Read the federation's current state from the exchange."""
    now = time.time() if now is None else now
    found = exchange.read_state()
    state = found[0] if found else None
    round_index = state.round_index if state else None
    manifest = exchange.read_global_manifest(round_index) if round_index else None
    registrations = {r.site_id: r.status for r in exchange.list_registrations()}
    for site_id, registration in registrations.items():
        if registration == "pending":  # a malformed report is why a site may stay pending
            exchange.list_preflights(site_id)
    invited = set(manifest.invited_sites) if manifest else set()
    answered: set[SiteId] = set()
    foreign: tuple[int, tuple[str, ...]] = (0, ())
    if round_index:  # by exact name, as the aggregator decides (``RoundKeys``)
        keys = RoundKeys(exchange.layout, round_index, invited)
        keys.classify(exchange.list_update_keys(round_index))
        answered = set(keys.answered)
        foreign = (keys.foreign_count, tuple(keys.foreign_samples))
    decisions = dict(state.decisions) if state else {}
    results = []
    if round_index:
        for index in range(round_index, max(round_index - _LOOKBACK_ROUNDS, 0), -1):
            result = exchange.read_result(index)
            if result is not None:
                results.append(result)
    current = results[0] if results and results[0].round_index == round_index else None
    if current is not None:  # a closed round's decisions live in result.json
        for decision in [*current.accepted, *current.rejected, *current.declined]:
            decisions.setdefault(decision.site_id, decision)
        foreign = (current.foreign_keys, tuple(current.foreign_key_samples))
    sites = sorted(set(registrations) | invited | answered | set(decisions))
    rejections = _last_rejections(results)
    epsilons = _last_epsilons(results)
    aurocs = _last_aurocs(exchange, sites, round_index) if round_index else {}
    phase = state.phase if state else "not started"
    final = bool(manifest and manifest.final)
    deadline = state.deadline_unix - now if state and state.phase == "collecting" else None
    return FederationStatus(
        federation_id=exchange.federation_id,
        exchange=exchange.describe(),
        round_index=round_index,
        task=manifest.task if manifest else None,
        phase=phase,
        deadline_in_s=deadline,
        message=state.message if state else None,
        sites=[
            SiteStatus(
                site_id=site_id,
                registration=registrations.get(site_id, "-"),
                state=site_state(
                    registrations.get(site_id, "-"),
                    site_id in invited,
                    site_id in answered,
                    decisions[site_id].status if site_id in decisions else "-",
                    phase,
                    final,
                ),
                invited=site_id in invited,
                answered=site_id in answered,
                decision=decisions[site_id].status if site_id in decisions else "-",
                last_rejection=rejections.get(site_id),
                epsilon=epsilons.get(site_id),
                last_auroc=aurocs[site_id][0] if site_id in aurocs else None,
                last_auroc_round=aurocs[site_id][1] if site_id in aurocs else None,
            )
            for site_id in sites
        ],
        dp_fedavg_epsilon=_dp_fedavg_epsilon(results),
        final=final,
        foreign_keys=foreign[0],
        foreign_key_samples=foreign[1],
        skipped=tuple(skipped_rows(exchange)),
        withheld=latest_withheld(results),
    )


def format_countdown(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds <= 0:
        return f"passed {abs(seconds):.0f} s ago"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


def round_text(status: FederationStatus) -> str:
    """The training round a person counts; the final evaluation is named, not numbered."""
    if status.round_index is None:
        return "round -"
    if status.final:
        return f"round {status.training_round} (last), final evaluation"
    return f"round {status.round_index}" + (f" ({status.task})" if status.task else "")


def status_title(status: FederationStatus) -> str:
    line = (
        f"federation {status.federation_id}  {round_text(status)}  phase {status.phase}  "
        f"deadline {format_countdown(status.deadline_in_s)}"
    )
    if status.dp_fedavg_epsilon is not None:
        line += f"  DP-FedAvg epsilon {status.dp_fedavg_epsilon:.2f}"
    if status.foreign_keys:
        line += f"  foreign keys {status.foreign_keys} (e.g. {status.foreign_key_samples[0]})"
    if status.withheld:
        line += f"  {status.withheld}"
    return line + (f"  note: {status.message}" if status.message else "")


def status_table(status: FederationStatus) -> Table:
    """One row per hospital, for a terminal."""
    caption = status.exchange
    if any(site.registration == "-" for site in status.sites):
        caption += "\nregistry -: not in the registry (simulate, or server run --sites)"
    for row in status.skipped:  # hospital-written text: never read as markup
        caption += "\n" + escape(row.line())
    table = Table(title=status_title(status), caption=caption)
    for column in (
        "site",
        "state",
        "registry",
        "invited",
        "answered",
        "decision",
        "last rejection",
        "epsilon",
        "last AUROC",
    ):
        table.add_column(column)
    for site in status.sites:
        auroc = (
            "-"
            if site.last_auroc is None
            else f"{site.last_auroc:.3f} ({_round_label(status, site)})"
        )
        table.add_row(
            site.site_id,
            site.state,
            site.registration,
            "yes" if site.invited else "no",
            "yes" if site.answered else "no",
            site.decision,
            site.last_rejection or "-",
            "-" if site.epsilon is None else f"{site.epsilon:.2f}",
            auroc,
        )
    return table


def _round_label(status: FederationStatus, site: SiteStatus) -> str:
    if status.final and site.last_auroc_round == status.round_index:
        return "final"
    return f"r{site.last_auroc_round}"

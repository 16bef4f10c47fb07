"""Closing a round: the ``result.json`` that records it, from its decisions and sums.

Written once per round; a resumed aggregator that finds it never aggregates the round again
(it re-derives the next model from the replayed updates and checks it against the result).
"""

from __future__ import annotations

from collections.abc import Sequence

from fl_core.config import FederationConfig
from fl_core.exchange.manifests import FederationState, RoundResult
from fl_core.exchange.protocol import Exchange
from fl_core.hashing import sha256_hex
from fl_server.aggregator import ServerAggregator
from fl_server.open_round import OpenRound
from fl_server.privacy_round import round_privacy
from fl_server.round_metrics import summarise_evaluations
from fl_server.validation_round import (
    final_recalibration,
    stops_early,
    sum_reports,
    with_validation,
)
from fl_server.withheld import withheld_counts


def round_result(
    exchange: Exchange,
    config: FederationConfig,
    state: FederationState,
    current: OpenRound,
    aggregator: ServerAggregator,
    next_weights: bytes | None,
    closed_unix: float,
    earlier_losses: Sequence[float],
) -> RoundResult:
    """The result of the open round, its decisions in ``state`` and its next model;
    ``earlier_losses``: the validation losses of earlier training rounds (early stopping)."""
    manifest = current.manifest
    round_index = manifest.round_index
    decisions = state.decisions.values()
    accepted = [d for d in decisions if d.status == "accepted"]
    counted = [d.site_id for d in decisions if d.status != "rejected"]
    bins = config.evaluation.histogram_bins
    evaluations = [current.evaluations[s] for s in counted if s in current.evaluations]
    validation = sum_reports(
        [current.validations[s] for s in counted if s in current.validations],
        bins,
        current.protocol.masked_validation(),
    )
    evaluation = with_validation(
        summarise_evaluations(evaluations, bins, current.protocol.masked_evaluation()),
        validation,
        config.evaluation.recalibrate,
    )
    recalibration = None
    if manifest.final and config.evaluation.recalibrate:
        test = sum_reports(evaluations, bins, None).histogram
        recalibration = final_recalibration(validation, test)
    stopped_early = (
        current.training
        and round_index < config.rounds
        and stops_early(earlier_losses, evaluation, config.evaluation.early_stopping_patience)
    )
    losses = list(current.train_losses.values())
    total = sum(n for _, n in losses)
    return RoundResult(
        federation_id=exchange.federation_id,
        round_index=round_index,
        task=manifest.task,
        global_sha256=manifest.sha256,
        next_global_sha256=sha256_hex(next_weights) if next_weights else None,
        accepted=accepted,
        rejected=[d for d in decisions if d.status == "rejected"],
        declined=[d for d in decisions if d.status == "declined"],
        privacy=round_privacy(aggregator, current.epsilons),
        missing=sorted(set(manifest.invited_sites) - state.decisions.keys()),
        evaluation=evaluation,
        recalibration=recalibration,
        stopped_early=stopped_early,
        withheld_evaluations=withheld_counts(current.withheld, state.decisions),
        train_loss=sum(loss * n for loss, n in losses) / total if total else None,
        started_unix=state.started_unix,
        closed_unix=closed_unix,
        extensions=state.extensions,
        config_hash=state.config_hash,
        foreign_keys=current.keys.foreign_count,
        foreign_key_samples=current.keys.foreign_samples,
        capped_weights={
            d.site_id: current.capped[d.site_id] for d in accepted if d.site_id in current.capped
        },
    )

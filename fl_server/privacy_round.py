"""What the round loop records about privacy: declined answers and the epsilon spent.

Kept out of ``round_loop`` so that the loop only calls two functions: a hospital that refused
to train (its DP-SGD budget would be exceeded) becomes a ``declined`` decision with the
reason it gave, and ``result.json`` gathers every answering hospital's DP-SGD epsilon and the
DP-FedAvg epsilon of the model.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from fl_core.exchange.manifests import Decision, RoundPrivacy, UpdateManifest
from fl_core.types import SiteId
from fl_server.aggregator import ServerAggregator
from fl_server.dp_fedavg import DpFedAvgAggregator

log = structlog.get_logger("fedsilo.server")


def declined_decision(manifest: UpdateManifest, now: float) -> Decision:
    """An admitted answer whose hospital refused to train; it counts as answered, not accepted."""
    expected = manifest.declined == "no_training_rows"  # a fold without its rows, not a fault
    emit = log.info if expected else log.warning
    # a site policy's refusal names its rule: "policy study_not_approved"
    reason = (
        f"policy {manifest.policy_rule}" if manifest.declined == "policy" else manifest.declined
    )
    emit(
        "update_declined",
        round_index=manifest.round_index,
        site_id=manifest.site_id,
        reason=reason,
        detail=manifest.declined_detail,
    )
    return Decision(
        site_id=manifest.site_id,
        status="declined",
        reason=reason,
        detail=manifest.declined_detail,
        nonce=manifest.nonce,
        num_examples=manifest.num_examples,
        decided_unix=now,
    )


def round_privacy(
    aggregator: ServerAggregator, site_epsilon: Mapping[SiteId, float]
) -> RoundPrivacy | None:
    """The round's privacy record, or None when no DP is in use."""
    dp_fedavg = aggregator if isinstance(aggregator, DpFedAvgAggregator) else None
    if not site_epsilon and dp_fedavg is None:
        return None
    return RoundPrivacy(
        site_epsilon=dict(sorted(site_epsilon.items())),
        dp_fedavg_epsilon=dp_fedavg.epsilon if dp_fedavg else None,
        dp_fedavg_delta=dp_fedavg.config.delta if dp_fedavg else None,
        dp_fedavg_noise_multiplier=dp_fedavg.noise_multiplier if dp_fedavg else None,
    )

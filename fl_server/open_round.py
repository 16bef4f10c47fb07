"""What the aggregator holds in memory for the open round; all of it rebuildable from S3.

A resumed aggregator rebuilds it from ``state.json``'s decisions and the write-once answers
they name, so nothing here is ever the only copy of anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fl_core.disclosure import FloorRule, withheld_evaluation_rule
from fl_core.exchange.manifests import EvaluationReport, GlobalManifest, UpdateManifest
from fl_core.types import SiteId, Weights
from fl_server.answer_keys import RoundKeys
from fl_server.round_protocol import ProtocolRound


@dataclass
class OpenRound:
    """The open round: its model, its protocol and what its answers told so far."""

    manifest: GlobalManifest
    global_weights: Weights | None
    """The global model of a training round (None: an evaluation round sums nothing)."""
    protocol: ProtocolRound
    """The round as its aggregation protocol runs it; its context is what admission checks."""
    keys: RoundKeys
    """The round's listed keys classified so far: answers by exact name, foreign keys."""
    check_workers: int = 0
    """Threads checking answers ahead (``lookahead.workers_for``): 0 for small updates."""
    evaluations: dict[SiteId, EvaluationReport] = field(default_factory=dict)
    validations: dict[SiteId, EvaluationReport] = field(default_factory=dict)
    train_losses: dict[SiteId, tuple[float, int]] = field(default_factory=dict)
    epsilons: dict[SiteId, float] = field(default_factory=dict)  # DP-SGD spent per hospital
    withheld: dict[SiteId, FloorRule] = field(default_factory=dict)
    """Sites whose evaluation their disclosure floor withheld, and the rule."""
    registered: dict[SiteId, int] = field(default_factory=dict)
    """Training rows the invited sites reported before round 1 (``weight_bounds``)."""
    weight_cap: int | None = None
    """The most FedAvg weight one site may have this round (``round.max_weight_share``)."""
    recorded_weights: dict[SiteId, int] | None = None
    """The capped weights of a round closed before a restart, as its result.json records
    them: re-aggregating must use the very weights the recorded model was built with."""
    capped: dict[SiteId, int] = field(default_factory=dict)
    """Accepted sites whose weight was capped, and the weight used."""

    @property
    def round_index(self) -> int:
        return self.manifest.round_index

    @property
    def training(self) -> bool:
        return self.manifest.task == "train"

    def weight_of(self, site_id: SiteId, claimed: int) -> int:
        """The FedAvg weight of an admitted training answer claiming ``claimed`` rows."""
        if self.recorded_weights is not None:
            return self.recorded_weights.get(site_id, claimed)
        return claimed if self.weight_cap is None else min(claimed, self.weight_cap)

    def remember(self, update: UpdateManifest) -> None:
        """Keep what closing the round needs. Replay sets hold earlier rounds only: within a
        round, the file's metadata binds it to its site, so a copy fails ``site_mismatch``
        and cannot knock the original out by arriving first."""
        if update.evaluation is not None:
            self.evaluations[update.site_id] = update.evaluation
        if update.validation is not None:
            self.validations[update.site_id] = update.validation
        if update.train_loss is not None:
            self.train_losses[update.site_id] = (update.train_loss, update.num_examples)
        if update.privacy is not None:
            self.epsilons[update.site_id] = update.privacy.epsilon
        if update.evaluation is None and (rule := withheld_evaluation_rule(update.suppressed)):
            self.withheld[update.site_id] = rule

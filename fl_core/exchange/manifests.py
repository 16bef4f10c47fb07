"""The JSON documents of the exchange, as validated models.

Everything a hospital writes is parsed through these models (``extra="forbid"``), so a
malformed or hostile manifest fails admission with a reason instead of reaching the math.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fl_core.data.profile import SiteProfile
from fl_core.disclosure import MAX_SUPPRESSIONS, FloorRule, Suppression
from fl_core.study import Study

Task = Literal["train", "evaluate"]
SHA256_PATTERN = r"^[0-9a-f]{64}$"
NONCE_PATTERN = r"^[0-9a-f]{32,128}$"


class _Document(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def _changed(self, **changes: Any) -> Self:
        """A copy with ``changes``, validated: an unknown field or a wrong value fails here
        (``model_copy(update=...)`` validates neither). The typed transitions use it."""
        unknown = changes.keys() - type(self).model_fields.keys()
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {sorted(unknown)}")
        return type(self).model_validate({**dict(self), **changes})


MAX_HISTOGRAM_BINS = 1_000_000
"""Far above ``evaluation.histogram_bins``'s limit: a bound on what a hospital may declare."""
MAX_BIN_COUNT = 2**40
"""Per bin: a million hospitals' summed counts still fit the int64 of ``ClassHistogram``."""


class SparseCounts(_Document):
    """One class's non-zero bins: ``count[i]`` test examples fell in bin ``index[i]``.

    Sparse because a hospital's test split (~130 stays) fills few of the ~2000 bins: dense
    lists made the aggregator parse ~12,000 zeros per manifest. Two parallel lists rather than
    ``[[bin, count], ...]`` pairs: plain int lists parse fastest and still read at a glance.
    """

    index: list[Annotated[int, Field(ge=0)]] = Field(
        max_length=MAX_HISTOGRAM_BINS, description="bin indices, strictly increasing"
    )
    count: list[Annotated[int, Field(gt=0, le=MAX_BIN_COUNT)]] = Field(
        max_length=MAX_HISTOGRAM_BINS, description="examples in each listed bin, all > 0"
    )

    @model_validator(mode="after")
    def _aligned_and_increasing(self) -> SparseCounts:
        if len(self.index) != len(self.count):
            raise ValueError(
                f"index has {len(self.index)} entries but count has {len(self.count)}; "
                "give one count per listed bin"
            )
        # map(lt) runs in C: cheap even for the longest list the manifest size limit allows
        if not all(map(operator.lt, self.index, self.index[1:])):
            at = next(i for i in range(1, len(self.index)) if self.index[i - 1] >= self.index[i])
            raise ValueError(
                f"index must be strictly increasing, but index[{at - 1}] = {self.index[at - 1]} "
                f"and index[{at}] = {self.index[at]}; list each bin once, in order"
            )
        return self

    @property
    def total(self) -> int:
        return sum(self.count)


class ScoreHistogram(_Document):
    """Counts of predicted risk per fixed bin, split by true class (docs/design.md step 6).

    The wire form only, listing the non-zero bins: ``{"bins": 2000, "positives": {"index":
    [3, 17], "count": [1, 2]}, "negatives": {...}}``. ``fl_core.exchange.histograms`` converts
    to and from the dense ``fl_core.metrics.ClassHistogram`` that the metrics are computed on.
    """

    bins: int = Field(ge=2, le=MAX_HISTOGRAM_BINS, description="number of fixed risk bins")
    positives: SparseCounts
    negatives: SparseCounts

    @model_validator(mode="after")
    def _indices_below_bins(self) -> ScoreHistogram:
        for name, counts in (("positives", self.positives), ("negatives", self.negatives)):
            if counts.index and counts.index[-1] >= self.bins:
                raise ValueError(
                    f"{name} lists bin {counts.index[-1]}, but bins is {self.bins}; "
                    f"bin indices run from 0 to {self.bins - 1}"
                )
        return self

    @property
    def num_examples(self) -> int:
        """Examples counted in both classes (no dense array is built)."""
        return self.positives.total + self.negatives.total


class EvaluationReport(_Document):
    """What a hospital reports about a global model on its test split: no per-patient data."""

    num_examples: int = Field(ge=0)
    loss_sum: float = Field(ge=0, allow_inf_nan=False)
    histogram: ScoreHistogram
    reference: dict[str, ScoreHistogram] = Field(default_factory=dict)
    finetuned: EvaluationReport | None = Field(
        default=None,
        description="personalisation: the same test split scored by the hospital's fine-tuned "
        "copy of the final model (the fine-tuned weights never leave the hospital)",
    )

    @model_validator(mode="after")
    def _counts_match(self) -> EvaluationReport:
        counted = self.histogram.num_examples
        if counted != self.num_examples:
            raise ValueError(f"histogram counts {counted} != num_examples {self.num_examples}")
        if self.finetuned is not None:
            if self.finetuned.finetuned is not None:
                raise ValueError("a fine-tuned report cannot nest another fine-tuned report")
            if self.finetuned.num_examples != self.num_examples:
                raise ValueError("the fine-tuned report must score the same test split")
        return self


class GlobalManifest(_Document):
    federation_id: str
    round_index: int = Field(ge=1)
    task: Task
    final: bool = False
    sha256: str = Field(pattern=SHA256_PATTERN)
    parent_sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    num_bytes: int = Field(gt=0)
    deadline_unix: float
    invited_sites: list[str]
    config_hash: str
    created_unix: float
    ledger_head: str | None = Field(
        default=None,
        pattern=SHA256_PATTERN,
        description="entry_hash of the newest ledger entry when this model was published (None "
        "in round 1): a hospital that keeps it can later prove the chain was not rewritten",
    )
    study: Study | None = Field(
        default=None,
        description="what the federation agreed (None from aggregators that predate it); "
        "a hospital trusts it only if its digest is config_hash",
    )


class SitePrivacy(_Document):
    """A hospital's DP-SGD budget as its accountant sees it after this answer."""

    epsilon: float = Field(ge=0, allow_inf_nan=False, description="spent so far")
    delta: float = Field(gt=0, lt=1)
    target_epsilon: float = Field(gt=0, allow_inf_nan=False)
    noise_multiplier: float = Field(gt=0, allow_inf_nan=False)
    steps: int = Field(ge=0)


DeclineReason = Literal["privacy_budget_exhausted", "no_training_rows", "policy"]

PolicyRule = Literal[
    "federation_not_served",
    "study_not_approved",
    "architecture_not_approved",
    "privacy_required",
    "epsilon_budget",
    "max_rounds",
    "max_update_bytes",
    "disclosure_floor",
]
"""Which rule of a hospital's site policy (``fl_core.site_policy``) refused a round."""


MANIFEST_METADATA_KEY = "fedsilo.manifest"
"""Where a training answer's safetensors file carries its manifest (compact JSON)."""


class UpdateManifest(_Document):
    """A hospital's answer to a round; every field is checked at admission.

    A training answer is one object, its ``.safetensors`` file, with this manifest inside the
    file's metadata (``fl_core.admission.update_metadata``): one write, so there is no state in
    which tensors lack their manifest or a manifest names tensors that are not there. An
    evaluation answer, or a declined round, is this manifest alone as ``.json``.
    """

    federation_id: str
    site_id: str
    round_index: int = Field(ge=1)
    task: Task
    global_sha256: str = Field(pattern=SHA256_PATTERN)
    num_examples: int = Field(ge=0)
    nonce: str = Field(pattern=NONCE_PATTERN)
    train_loss: float | None = Field(default=None, allow_inf_nan=False)
    evaluation: EvaluationReport | None = None
    validation: EvaluationReport | None = Field(
        default=None,
        description="the same model on the validation split the hospital holds out of its "
        "training rows: early stopping and the recalibration are fitted on its sums",
    )
    metrics: dict[str, float] = Field(default_factory=dict)
    privacy: SitePrivacy | None = None
    declined: DeclineReason | None = Field(
        default=None, description="the hospital refused to train this round, and why"
    )
    declined_detail: str | None = Field(default=None, max_length=500)
    suppressed: list[Suppression] = Field(
        default_factory=list,
        max_length=MAX_SUPPRESSIONS,
        description="outputs the hospital's disclosure floor held back (fl_core.disclosure)",
    )
    policy_rule: PolicyRule | None = Field(
        default=None, description="with declined='policy': the site policy's rule that refused"
    )

    @model_validator(mode="after")
    def _declined_only_training(self) -> UpdateManifest:
        if self.declined is not None and self.declined != "policy" and self.task != "train":
            raise ValueError("only a training round can be declined")
        return self

    @model_validator(mode="after")
    def _policy_decline_discloses_nothing(self) -> UpdateManifest:
        """A round refused by the hospital's policy names its rule and carries no results."""
        if (self.declined == "policy") != (self.policy_rule is not None):
            raise ValueError("declined 'policy' and policy_rule go together")
        if self.declined == "policy" and (
            self.evaluation is not None
            or self.validation is not None
            or self.train_loss is not None
            or self.metrics
        ):
            raise ValueError("a round declined by policy carries no evaluation or loss")
        return self

    def trained(self, num_examples: int, train_loss: float | None) -> UpdateManifest:
        """This answer as a training round's: ``num_examples`` rows trained on. A loss that
        is not finite is sent as none (as JSON writes it); the update itself is what the
        aggregator refuses if training diverged."""
        finite = train_loss is not None and math.isfinite(train_loss)
        return self._changed(
            task="train", num_examples=num_examples, train_loss=train_loss if finite else None
        )

    def declined_as(self, reason: DeclineReason, detail: str) -> UpdateManifest:
        """This answer as a training round the hospital declined, and why."""
        return self._changed(task="train", declined=reason, declined_detail=detail)

    def with_privacy(self, spent: SitePrivacy) -> UpdateManifest:
        """This answer with the hospital's privacy spent so far."""
        return self._changed(privacy=spent)


Sha256Source = Literal["s3_checksum", "computed"]
"""Who vouches for an update's sha256: S3 (verified on arrival) or the aggregator's hash."""


class Decision(_Document):
    """The aggregator's verdict on one site's answer in one round."""

    site_id: str
    status: Literal["accepted", "rejected", "declined"]
    reason: str | None = None
    detail: str | None = None
    sha256: str | None = None
    sha256_source: Sha256Source | None = Field(
        default=None,
        description="where an accepted training answer's sha256 came from: the SHA-256 "
        "checksum S3 verified on upload and stored, or the aggregator hashing the file",
    )
    nonce: str | None = None
    num_examples: int = 0
    decided_unix: float

    def overruled(self, reason: str, detail: str) -> Decision:
        """This answer rejected after all, with ``reason`` (a rule that closes the round)."""
        return self._changed(status="rejected", reason=reason, detail=detail)


class CalibrationFigures(_Document):
    """``fl_core.calibration.Calibration`` of one model, as the round's result records it."""

    brier: float
    ece: float
    intercept: float | None = None
    slope: float | None = None


class RoundMetrics(_Document):
    """Metrics of one global model, from the summed histograms of the hospitals' test splits."""

    num_examples: int
    num_sites: int
    auroc: float | None
    auprc: float | None
    loss: float | None
    reference_auroc: dict[str, float | None] = Field(default_factory=dict)
    calibration: CalibrationFigures | None = None
    reference_calibration: dict[str, CalibrationFigures] = Field(default_factory=dict)
    masked_sites: int = Field(
        default=0,
        ge=0,
        description="hospitals (of num_sites) whose evaluation counted only inside the secure "
        "aggregation sum (every training answer under secure aggregation)",
    )
    validation_loss: float | None = Field(
        default=None,
        description="mean log-loss on the hospitals' summed validation splits (early stopping)",
    )
    validation_examples: int = Field(default=0, ge=0)
    validation_loss_recalibrated: float | None = Field(
        default=None,
        description="the same after the Platt scaling fitted on those histograms: the loss of "
        "the model as it would be published, which early stopping follows when recalibrating",
    )


class Recalibration(_Document):
    """Platt scaling of the final model: risk = sigmoid(intercept + slope * logit), fitted on
    the hospitals' summed validation histograms; the published model applies it."""

    intercept: float = Field(allow_inf_nan=False)
    slope: float = Field(gt=0, allow_inf_nan=False)
    validation_examples: int = Field(ge=0)
    test_before: CalibrationFigures | None = None
    test_after: CalibrationFigures | None = None


class AppliedScaling(_Document):
    """The Platt scaling a published model carries on top of the global model it derives from
    (``fl_core.recalibration.with_scaling``)."""

    intercept: float = Field(allow_inf_nan=False)
    slope: float = Field(gt=0, allow_inf_nan=False)


class PublishedModel(_Document):
    """The federation's model for use, beside the file it names (``published/model.json``).

    Derived, never trained: the global model of ``round_index`` (the final evaluation round)
    with SCAFFOLD's controls stripped and ``scaling`` applied, so anyone holding the
    exchange can derive the bytes again (``fl_core.exchange.published.published_bytes``) and
    check them against ``sha256``; ``fedsilo ledger verify`` does.
    """

    federation_id: str
    round_index: int = Field(ge=1)
    sha256: str = Field(pattern=SHA256_PATTERN)
    num_bytes: int = Field(gt=0)
    global_sha256: str = Field(
        pattern=SHA256_PATTERN, description="the uncalibrated global model it derives from"
    )
    scaling: AppliedScaling | None = Field(
        description="the recalibration applied; None where none was fitted, or the model has "
        "no risk_intercept/risk_slope tensors to carry it"
    )
    config_hash: str
    created_unix: float = Field(allow_inf_nan=False)


class RoundPrivacy(_Document):
    """Privacy spent as of a round: DP-SGD per hospital, DP-FedAvg for the model."""

    site_epsilon: dict[str, float] = Field(
        default_factory=dict, description="each answering hospital's DP-SGD epsilon so far"
    )
    dp_fedavg_epsilon: float | None = None
    dp_fedavg_delta: float | None = None
    dp_fedavg_noise_multiplier: float | None = None


class RoundResult(_Document):
    federation_id: str
    round_index: int
    task: Task
    global_sha256: str
    next_global_sha256: str | None
    accepted: list[Decision]
    rejected: list[Decision]
    missing: list[str]
    evaluation: RoundMetrics | None
    train_loss: float | None
    started_unix: float
    closed_unix: float
    extensions: int = 0
    config_hash: str
    declined: list[Decision] = Field(default_factory=list)
    privacy: RoundPrivacy | None = None
    foreign_keys: int = Field(
        default=0,
        ge=0,
        description="keys under the round's updates prefix that were no invited site's answer "
        "(ignored; a hospital wrote under its own prefix what is not its answer)",
    )
    foreign_key_samples: list[str] = Field(default_factory=list, max_length=20)
    capped_weights: dict[str, int] = Field(
        default_factory=dict,
        description="accepted sites whose FedAvg weight round.max_weight_share capped: the "
        "weight used instead of num_examples",
    )
    recalibration: Recalibration | None = Field(
        default=None,
        description="the final round: the Platt scaling the published model carries",
    )
    stopped_early: bool = Field(
        default=False,
        description="training stopped here: the summed validation loss did not improve for "
        "evaluation.early_stopping_patience rounds",
    )
    withheld_evaluations: dict[FloorRule, int] = Field(
        default_factory=dict,
        description="answering hospitals whose evaluation their disclosure floor withheld "
        "(not in the metrics), by the floor's rule",
    )


class LedgerEntry(_Document):
    round_index: int
    global_sha256: str
    next_global_sha256: str | None
    accepted: list[tuple[str, str]]
    rejected: list[tuple[str, str]]
    config_hash: str
    prev_hash: str | None
    entry_hash: str
    sha256_sources: dict[str, Sha256Source] = Field(
        default_factory=dict,
        description="per accepted site with a sha256, where it came from (Decision."
        "sha256_source); absent from entries written before it was recorded, and then left "
        "out of the hash (``fl_core.exchange.ledger.entry_fields``)",
    )


FederationPhase = Literal["collecting", "done", "failed"]


class FederationState(_Document):
    """The aggregator's checkpoint: enough to resume a round after a crash.

    It changes only through the transitions below, each of which returns a new, validated
    state: a misspelt field or a wrong value fails at the transition, not when an aggregator
    resumes from ``state.json``.
    """

    federation_id: str
    round_index: int = Field(ge=1)
    phase: FederationPhase
    started_unix: float
    deadline_unix: float
    extensions: int = Field(default=0, ge=0)
    decisions: dict[str, Decision] = Field(default_factory=dict)
    owner_id: str
    lease_expires_unix: float
    config_hash: str
    strategy_state: dict[str, Any] = Field(default_factory=dict)
    message: str | None = None

    def leased(self, owner_id: str, expires_unix: float) -> FederationState:
        """The same state held by ``owner_id`` until ``expires_unix``."""
        return self._changed(owner_id=owner_id, lease_expires_unix=expires_unix)

    def with_decisions(self, decisions: Mapping[str, Decision]) -> FederationState:
        """The open round's verdicts so far (every one a ``Decision``)."""
        if self.phase != "collecting":
            raise ValueError(f"decisions recorded in a {self.phase} federation")
        return self._changed(decisions=dict(decisions))

    def extended(self, extend_s: float) -> FederationState:
        """The open round's deadline moved ``extend_s`` later (below quorum, ``extend``)."""
        if self.phase != "collecting" or extend_s <= 0:
            raise ValueError(f"cannot extend a {self.phase} round by {extend_s} s")
        return self._changed(
            deadline_unix=self.deadline_unix + extend_s, extensions=self.extensions + 1
        )

    def next_round(
        self, started_unix: float, deadline_unix: float, strategy_state: dict[str, Any]
    ) -> FederationState:
        """The next round opened: no decisions yet, and the strategy as it left this one."""
        if self.phase != "collecting":
            raise ValueError(f"a {self.phase} federation opens no round")
        return self._changed(
            round_index=self.round_index + 1,
            started_unix=started_unix,
            deadline_unix=deadline_unix,
            extensions=0,
            decisions={},
            strategy_state=strategy_state,
        )

    def done(self) -> FederationState:
        """The final round closed."""
        return self._changed(phase="done", decisions={})

    def failed(self, message: str) -> FederationState:
        """The federation stopped on a failure the operator must read (``message``)."""
        if not message:
            raise ValueError("a failed federation needs a message")
        return self._changed(phase="failed", message=message)


class Registration(_Document):
    site_id: str
    account_id: str | None = None
    role_arn: str | None = None
    joined_unix: float = Field(allow_inf_nan=False)
    status: Literal["pending", "active", "revoked"]
    changed_unix: float | None = Field(default=None, allow_inf_nan=False)
    note: str | None = None
    secagg_public_key: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="long-term X25519 public key (hex) for secure aggregation",
    )


class PreflightCheck(_Document):
    name: str
    ok: bool
    detail: str
    fix: str | None = None


class PreflightReport(_Document):
    """What ``fedsilo onboard check`` proved from inside a hospital's role."""

    federation_id: str
    site_id: str
    account_id: str
    checked_unix: float = Field(allow_inf_nan=False)
    checks: list[PreflightCheck]

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)


class MomentsReport(_Document):
    """One hospital's per-feature counts, sums and sums of squares on its training split.

    Aggregates, never rows: the coordinating side adds them into the global model's
    standardisation buffers before round 1 (the hospital reports once, write-once).
    """

    federation_id: str
    site_id: str
    num_examples: int = Field(ge=0)
    count: list[float]
    total: list[float]
    total_sq: list[float]
    suppressed: list[Suppression] = Field(
        default_factory=list,
        max_length=MAX_SUPPRESSIONS,
        description="features whose moments the hospital's disclosure floor held back (their "
        "count, total and total_sq are reported as 0)",
    )
    profile: SiteProfile | None = Field(
        default=None,
        description="counts on fixed bins and missingness per feature, the hospital's floor "
        "applied (None from hospitals that predate it)",
    )

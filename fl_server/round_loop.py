"""The aggregator's round loop: publish, admit, close, aggregate, checkpoint, next round.

Every step is idempotent against what the exchange holds, so a crashed aggregator resumes
from the store: admitted decisions are in ``state.json``, admitted updates are write-once
files that are re-read to rebuild the running sum, and a round whose ``result.json`` exists
is never aggregated again. ``state.json`` is only ever replaced with the etag last read and
carries a lease, so two aggregators can never both advance a round.
"""

from __future__ import annotations

import dataclasses
import functools
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from fl_core.admission import (
    AdmissionContext,
    check_manifest,
    check_update_file,
    check_weights_size,
)
from fl_core.aggregation import NonFiniteUpdateError
from fl_core.calibration import calibration_from_histogram
from fl_core.config import FederationConfig
from fl_core.disclosure import FloorRule, withheld_evaluation_rule
from fl_core.errors import (
    ChecksumMissingError,
    ConfigError,
    ExchangeError,
    FederationLockedError,
    ObjectExistsError,
    ObjectIntegrityError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    ObjectUnreadableError,
    PreconditionFailedError,
    RoundFailedError,
    UpdateRejectedError,
)
from fl_core.exchange.histograms import class_histogram
from fl_core.exchange.ledger import chain_hash, entry_fields, sha256_sources
from fl_core.exchange.manifests import (
    CalibrationFigures,
    Decision,
    EvaluationReport,
    FederationState,
    GlobalManifest,
    LedgerEntry,
    RoundMetrics,
    RoundResult,
    Sha256Source,
    Task,
    UpdateManifest,
)
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.registry import activate_verified_sites
from fl_core.metrics import ClassHistogram, auprc_from_histogram, auroc_from_histogram
from fl_core.secagg.masked_evaluation import MaskedEvaluationSum
from fl_core.serialization import (
    decode_weights,
    encode_weights,
    read_tensor_specs,
    sha256_hex,
    view_weights,
)
from fl_core.study import Study
from fl_core.types import ETag, Sha256Hex, SiteId, Weights
from fl_server.aggregator import AdmittedUpdate, ServerAggregator
from fl_server.allocator import keep_freed_buffers
from fl_server.answer_keys import RoundKeys, sample
from fl_server.lookahead import checked_ahead, workers_for
from fl_server.privacy_round import declined_decision, round_privacy
from fl_server.secagg_server import SecAggServer
from fl_server.validation_round import (
    final_recalibration,
    stops_early,
    sum_reports,
    with_validation,
)
from fl_server.weight_bounds import check_registered_claim, read_registered_examples, weight_cap
from fl_server.withheld import withheld_counts

log = structlog.get_logger("fedsilo.server")

_CheckedAnswer = tuple[UpdateManifest, Sha256Hex | None, Sha256Source, AdmittedUpdate | None]
"""An answer that passed admission: its manifest, file sha256 and who vouches for it, and
its update (training rounds)."""


class RoundEvents:
    """What the round loop tells an observer; subclass it for a user interface or a sink.

    Every hook runs on the aggregator's thread between two steps of the round, so it must
    return quickly and must not raise: the CLI's progress bar, the TensorBoard sink and the
    simulation's per-round rows are subclasses. The default does nothing.
    """

    def round_opened(self, manifest: GlobalManifest) -> None:
        """A round's global model is published (or found, on resume)."""

    def decided(self, round_index: int, decision: Decision) -> None:
        """One site's answer was accepted or rejected."""

    def round_closed(self, result: RoundResult) -> None:
        """A round's result.json is written."""


def summarise_evaluations(
    reports: Sequence[EvaluationReport],
    num_bins: int,
    masked: MaskedEvaluationSum | None = None,
) -> RoundMetrics | None:
    """Pooled metrics of one global model from the hospitals' histograms, and from the sum
    of those that went only into the secure aggregation sum (``masked``)."""
    if not reports and masked is None:
        return None
    model = ClassHistogram.empty(num_bins)
    references: dict[str, ClassHistogram] = {}
    loss_sum, count = 0.0, 0
    for report in reports:
        _check_bins(report, num_bins)
        model = model + class_histogram(report.histogram)
        loss_sum += report.loss_sum
        count += report.num_examples
        for name, hist in report.reference.items():
            found = references.get(name, ClassHistogram.empty(num_bins))
            references[name] = found + class_histogram(hist)
    if masked is not None:
        model = model + masked.histogram
        loss_sum += masked.loss_sum
        count += masked.num_examples
    reference_calibration = {name: calibration_figures(h) for name, h in sorted(references.items())}
    return RoundMetrics(
        num_examples=count,
        num_sites=len(reports) + (masked.num_sites if masked else 0),
        masked_sites=masked.num_sites if masked else 0,
        auroc=auroc_from_histogram(model),
        auprc=auprc_from_histogram(model),
        loss=loss_sum / count if count else None,
        reference_auroc={name: auroc_from_histogram(h) for name, h in sorted(references.items())},
        calibration=calibration_figures(model),
        reference_calibration={k: v for k, v in reference_calibration.items() if v is not None},
    )


def calibration_figures(histogram: ClassHistogram) -> CalibrationFigures | None:
    """The calibration document of one summed histogram (None: no stays in it)."""
    figures = calibration_from_histogram(histogram)
    if figures is None:
        return None
    return CalibrationFigures(
        brier=figures.brier, ece=figures.ece, intercept=figures.intercept, slope=figures.slope
    )


def _check_bins(report: EvaluationReport, num_bins: int) -> None:
    """Every histogram the round sums must have the configured bins; raises at admission.

    The reference histograms are checked too: summed at close, one of the wrong length would
    otherwise fail the round after its hospital was accepted.
    """
    named = [("histogram", report.histogram)]
    named += [(f"reference {name!r} histogram", hist) for name, hist in report.reference.items()]
    for what, hist in named:
        if hist.bins != num_bins:
            raise UpdateRejectedError(
                "malformed_manifest", f"{what} has {hist.bins} bins, expected {num_bins}"
            )


def _read_fault_reason(err: ExchangeError) -> str:
    """The rejection reason of an answer the store could not hand over intact."""
    if isinstance(err, ChecksumMissingError):
        return "missing_checksum"
    if isinstance(err, ObjectIntegrityError):
        return "sha256_mismatch"
    if isinstance(err, ObjectUnreadableError):
        return "unreadable"
    return "missing"


@dataclass
class _Round:
    """What the loop holds in memory for the open round (all of it rebuildable from S3)."""

    manifest: GlobalManifest
    global_weights: Weights | None
    context: AdmissionContext
    keys: RoundKeys
    """The round's listed keys classified so far: answers by exact name, foreign keys."""
    evaluations: dict[SiteId, EvaluationReport] = field(default_factory=dict)
    validations: dict[SiteId, EvaluationReport] = field(default_factory=dict)
    train_losses: dict[SiteId, tuple[float, int]] = field(default_factory=dict)
    epsilons: dict[SiteId, float] = field(default_factory=dict)  # DP-SGD spent per hospital
    withheld: dict[SiteId, FloorRule] = field(default_factory=dict)
    """Sites whose evaluation their disclosure floor withheld, and the rule."""
    check_workers: int = 0
    """Threads checking answers ahead (``lookahead.workers_for``): 0 for small updates."""
    registered: dict[SiteId, int] = field(default_factory=dict)
    """Training rows the invited sites reported before round 1 (``weight_bounds``)."""
    weight_cap: int | None = None
    """The most FedAvg weight one site may have this round (``round.max_weight_share``)."""
    recorded_weights: dict[SiteId, int] | None = None
    """The capped weights of a round closed before a restart, as its result.json records
    them: re-aggregating must use the very weights the recorded model was built with."""
    capped: dict[SiteId, int] = field(default_factory=dict)
    """Accepted sites whose weight was capped, and the weight used."""

    def weight_of(self, site_id: SiteId, claimed: int) -> int:
        """The FedAvg weight of an admitted training answer claiming ``claimed`` rows."""
        if self.recorded_weights is not None:
            return self.recorded_weights.get(site_id, claimed)
        return claimed if self.weight_cap is None else min(claimed, self.weight_cap)


class RoundLoop:
    def __init__(
        self,
        exchange: Exchange,
        aggregator: ServerAggregator,
        config: FederationConfig,
        sites: Sequence[SiteId],
        initial_weights: Weights | None = None,
        events: RoundEvents | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        owner_id: str | None = None,
        features: Sequence[str] = (),
    ) -> None:
        """``features``: the model's input feature names, published in the study."""
        if len(set(sites)) != len(sites):
            raise ConfigError("site ids collide: every hospital needs a unique site id")
        if config.round.min_sites > len(sites):
            raise ConfigError(
                f"round.min_sites {config.round.min_sites} > {len(sites)} hospitals; lower it"
            )
        self.exchange = exchange
        secagg_on = config.privacy.secagg.enabled
        self.secagg = SecAggServer(exchange, config, clock, sleep) if secagg_on else None
        self.aggregator = self.secagg.wrap(aggregator) if self.secagg else aggregator
        self.config = config
        self.sites = list(sites)
        self.initial_weights = initial_weights
        self.events = events or RoundEvents()
        self.clock = clock
        self.sleep = sleep
        self.owner_id = owner_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:12]}"
        self.study = Study.of(config, features)
        self.config_hash = self.study.digest()
        self._etag: ETag | None = None
        self._last_write = 0.0
        self._seen_nonces: set[str] = set()
        self._seen_digests: set[str] = set()
        self._seen_through = 0  # rounds whose results are in the two sets above
        self._registered: dict[SiteId, int | None] = {}  # moments reports' rows, read once
        self._told_unbounded = False
        keep_freed_buffers()

    # ---- state and lease ------------------------------------------------------------------

    def _save(self, state: FederationState) -> FederationState:
        """Compare-and-swap state.json, renewing our lease; losing the race is fatal."""
        now = self.clock()
        renewed = state.model_copy(
            update={
                "owner_id": self.owner_id,
                "lease_expires_unix": now + self.config.round.lease_s,
            }
        )
        try:
            self._etag = self.exchange.write_state(renewed, self._etag)
        except PreconditionFailedError as err:
            self._check_not_altered(err)
            raise FederationLockedError(
                f"another aggregator took over federation {self.exchange.federation_id}; "
                "this one stops (only one aggregator may run per federation)"
            ) from err
        self._last_write = now
        return renewed

    def _check_not_altered(self, err: PreconditionFailedError) -> None:
        """Our compare-and-swap failed: a rival took over, unless state.json was deleted or
        rolled back to an earlier version of ours (an emptied bucket, deleted versions)."""
        if self._etag is None:
            return  # creating: whoever wrote it first is the rival
        found = self.exchange.read_state()
        where = self.exchange.describe()
        federation = self.exchange.federation_id
        if found is None:
            raise ExchangeError(
                f"state.json of federation {federation} vanished from {where}; it was "
                "deleted: restore its last version (the bucket is versioned) and restart"
            ) from err
        if found[0].owner_id == self.owner_id:
            raise ExchangeError(
                f"state.json of federation {federation} in {where} was rolled back under this "
                "aggregator (it holds an earlier version of ours): the exchange was altered; "
                "restore its last version and restart"
            ) from err

    def _acquire(self) -> FederationState:
        """Create the federation, or take over a state whose owner's lease has lapsed."""
        found = self.exchange.read_state()
        if found is None:
            manifest = self._publish_first_round()
            state = FederationState(
                federation_id=self.exchange.federation_id,
                round_index=1,
                phase="collecting",
                started_unix=manifest.created_unix,
                deadline_unix=manifest.deadline_unix,
                owner_id=self.owner_id,
                lease_expires_unix=0.0,
                config_hash=self.config_hash,
                strategy_state=self.aggregator.state_dict(),
            )
            try:
                return self._save(state)
            except FederationLockedError:
                found = self.exchange.read_state()
                if found is None:
                    raise
        state, etag = found
        if state.config_hash != self.config_hash:
            raise ConfigError(
                f"federation {state.federation_id} was started with another config "
                f"(hash {state.config_hash[:12]}); rerun with the same config or a new "
                "federation_id"
            )
        state, etag = self._wait_for_lease(state, etag)
        self._etag = etag
        self.aggregator.load_state_dict(state.strategy_state)
        if state.phase != "collecting":
            return state
        log.info("federation_resumed", round_index=state.round_index, previous=state.owner_id)
        return self._save(state)

    def _wait_for_lease(self, state: FederationState, etag: ETag) -> tuple[FederationState, ETag]:
        """A live owner renews its lease; a dead one's lease lapses and we take over."""
        while (
            state.phase == "collecting"
            and state.owner_id != self.owner_id
            and state.lease_expires_unix > self.clock()
        ):
            self.sleep(min(self.config.round.poll_interval_s * 4, 1.0))
            found = self.exchange.read_state()
            if found is None:
                raise ExchangeError("state.json vanished while waiting for the lease")
            if found[1] != etag:
                raise FederationLockedError(
                    f"federation {state.federation_id} is run by aggregator {found[0].owner_id} "
                    "(its lease keeps being renewed); stop that one first, only one may run"
                )
            state, etag = found
        return state, etag

    # ---- publishing ----------------------------------------------------------------------

    def _publish(
        self, round_index: int, weights: bytes, parent: str | None, task: Task, final: bool
    ) -> GlobalManifest:
        existing = self.exchange.read_global_manifest(round_index)
        if existing is not None:
            return existing  # published before a crash: the stored one is the truth
        # the previous round's entry is written before its next model (_close): it is the head
        head = self.exchange.read_ledger_entry(round_index - 1) if round_index > 1 else None
        now = self.clock()
        manifest = GlobalManifest(
            federation_id=self.exchange.federation_id,
            round_index=round_index,
            task=task,
            final=final,
            sha256=sha256_hex(weights),
            parent_sha256=parent,
            num_bytes=len(weights),
            deadline_unix=now + self.config.round.deadline_s,
            invited_sites=self.sites,
            config_hash=self.config_hash,
            created_unix=now,
            ledger_head=head.entry_hash if head is not None else None,
            study=self.study,
        )
        try:
            self.exchange.publish_global(weights, manifest)
        except ObjectExistsError:
            # another aggregator published this round first (two started at once): the stored
            # manifest is the truth, provided it names the same model
            stored = self.exchange.read_global_manifest(round_index)
            if stored is None or stored.sha256 != manifest.sha256:
                raise
            return stored
        log.info("global_published", round_index=round_index, task=task, sha256=manifest.sha256)
        return manifest

    def _publish_first_round(self) -> GlobalManifest:
        if self.initial_weights is None:
            raise ConfigError(
                f"federation {self.exchange.federation_id} has no state yet and no initial "
                "model was given; start it with `fedsilo simulate` or pass the initial model"
            )
        task: Task = "train"
        first = self.aggregator.initial_global(self.initial_weights)
        return self._publish(1, encode_weights(first), None, task, False)

    # ---- one round -------------------------------------------------------------------------

    def _history(self, round_index: int) -> tuple[frozenset[str], frozenset[str]]:
        """Nonces and update digests accepted in earlier rounds (replay protection).

        Each result.json is read once per process, not once per later round: round 1000 of
        a long federation would otherwise re-read 999 results of 208 decisions each.
        """
        for earlier in range(self._seen_through + 1, round_index):
            result = self.exchange.read_result(earlier)
            if result is None:
                continue
            for decision in result.accepted:
                if decision.nonce:
                    self._seen_nonces.add(decision.nonce)
                if decision.sha256:
                    self._seen_digests.add(decision.sha256)
        self._seen_through = max(self._seen_through, round_index - 1)
        return frozenset(self._seen_nonces), frozenset(self._seen_digests)

    def _revoked_sites(self) -> frozenset[SiteId]:
        """Revoked sites, after activating those whose onboarding preflight passed."""
        for site_id in activate_verified_sites(self.exchange, self.clock()):
            log.info("site_activated", site_id=site_id)
        return frozenset(
            r.site_id for r in self.exchange.list_registrations() if r.status == "revoked"
        )

    def _open(self, state: FederationState) -> _Round:
        manifest = self.exchange.read_global_manifest(state.round_index)
        if manifest is None:
            raise ExchangeError(
                f"round {state.round_index} has state but no global model in "
                f"{self.exchange.describe()}; the exchange was altered"
            )
        global_bytes = self.exchange.read_global_weights(manifest)
        nonces, digests = self._history(state.round_index)
        admission = self.config.admission
        context = AdmissionContext(
            federation_id=self.exchange.federation_id,
            round_index=state.round_index,
            task=manifest.task,
            global_sha256=manifest.sha256,
            invited_sites=frozenset(manifest.invited_sites),
            tensor_specs=read_tensor_specs(global_bytes),
            max_update_bytes=admission.max_update_bytes,
            max_manifest_bytes=admission.max_manifest_bytes,
            max_num_examples=admission.max_num_examples,
            revoked_sites=self._revoked_sites(),
            seen_nonces=nonces,
            seen_sha256=digests,
            # an aggregator that scans each slice as it adds it spares admission its own pass
            check_finite=not self.aggregator.checks_finite,
        )
        if self.secagg is not None and manifest.task == "train":  # masked updates from here
            context = self.secagg.open_round(state, manifest, context, self._save)
        weights = decode_weights(global_bytes) if manifest.task == "train" else None
        if weights is not None:
            self.aggregator.set_invited_sites(manifest.invited_sites)
            self.aggregator.begin_round(state.round_index, weights)
        # an answer is the size of the global model in a training round, a manifest otherwise
        workers = workers_for(len(global_bytes)) if manifest.task == "train" else 0
        keys = RoundKeys(self.exchange.layout, state.round_index, manifest.invited_sites)
        current = _Round(manifest, weights, context, keys, check_workers=workers)
        if manifest.task == "train":
            self._bound_weights(current)
        for decision in state.decisions.values():
            if decision.status in ("accepted", "declined"):
                self._replay(current, decision)
        self.events.round_opened(manifest)
        return current

    def _bound_weights(self, current: _Round) -> None:
        """The registered rows and the weight cap of a training round (``weight_bounds``).

        Reports missing so far are looked for again at every round (a hospital may report
        late). A round that closed before a restart has a result.json, whose capped weights
        are the ones its recorded model was built with: a report that arrived since must not
        change them.
        """
        invited = current.manifest.invited_sites
        missing = [s for s in invited if s not in self._registered]
        if missing:
            admission = self.config.admission
            found = read_registered_examples(
                self.exchange, missing, admission.max_num_examples, admission.max_manifest_bytes
            )
            self._registered.update(found)
        current.registered = {
            s: rows for s in invited if (rows := self._registered.get(s)) is not None
        }
        if not current.registered and not self._told_unbounded:
            self._told_unbounded = True
            log.info(
                "weights_unbounded",
                detail="no invited hospital reported its training rows before round 1, so "
                "num_examples is neither checked against them nor capped by "
                "round.max_weight_share",
            )
        if self.secagg is None:  # under secure aggregation each hospital weights its own
            current.weight_cap = weight_cap(
                current.registered.values(), self.config.round.max_weight_share
            )
        result = self.exchange.read_result(current.manifest.round_index)
        if result is not None:
            current.recorded_weights = dict(result.capped_weights)

    def _replay(self, current: _Round, decision: Decision) -> None:
        """Re-add an update admitted before a restart; it must be byte-identical."""
        round_index = current.manifest.round_index
        update = UpdateManifest.model_validate_json(
            self.exchange.read_update_manifest_bytes(round_index, decision.site_id)
        )
        if update.nonce != decision.nonce:
            raise ExchangeError(
                f"update manifest of site {decision.site_id} round {round_index} changed after "
                "admission; the exchange was altered"
            )
        self._remember(current, update)
        if current.manifest.task == "train" and decision.status == "accepted":
            self._add_again(current, decision)

    def _add_again(self, current: _Round, decision: Decision) -> None:
        """Add an update accepted earlier in the round to the sum again; byte-identical."""
        round_index = current.manifest.round_index
        data, stored = self.exchange.read_update_weights_verified(round_index, decision.site_id)
        if (stored or sha256_hex(data)) != decision.sha256:
            raise ExchangeError(
                f"admitted update of site {decision.site_id} round {round_index} changed "
                "after admission; the exchange was altered"
            )
        weight = self._weight(current, decision.site_id, decision.num_examples)
        self.aggregator.add_admitted(
            AdmittedUpdate(decision.site_id, weight, data, view_weights(data))
        )

    def _sum_again(self, current: _Round, decided: Mapping[SiteId, Decision]) -> None:
        """Begin the round's sum again from the updates accepted so far, in the order they
        were decided (as a resumed round does): an update found non-finite while it was
        added left part of itself in the sum."""
        assert current.global_weights is not None  # a training round
        self.aggregator.begin_round(current.manifest.round_index, current.global_weights)
        for decision in decided.values():
            if decision.status == "accepted":
                self._add_again(current, decision)

    def _weight(self, current: _Round, site_id: SiteId, claimed: int) -> int:
        """An accepted training answer's FedAvg weight; a capped one is named."""
        weight = current.weight_of(site_id, claimed)
        if weight < claimed:
            current.capped[site_id] = weight
            log.info(
                "weight_capped",
                round_index=current.manifest.round_index,
                site_id=site_id,
                num_examples=claimed,
                weight=weight,
                max_weight_share=self.config.round.max_weight_share,
            )
        return weight

    def _remember(self, current: _Round, update: UpdateManifest) -> None:
        """Keep what closing the round needs. Replay sets hold earlier rounds only: within a
        round, the file's metadata binds it to its site, so a copy fails ``site_mismatch``
        and cannot knock the original out by arriving first."""
        if update.evaluation is not None:
            current.evaluations[update.site_id] = update.evaluation
        if update.validation is not None:
            current.validations[update.site_id] = update.validation
        if update.train_loss is not None:
            current.train_losses[update.site_id] = (update.train_loss, update.num_examples)
        if update.privacy is not None:
            current.epsilons[update.site_id] = update.privacy.epsilon
        if update.evaluation is None and (rule := withheld_evaluation_rule(update.suppressed)):
            current.withheld[update.site_id] = rule

    def _admit(
        self,
        current: _Round,
        site_id: SiteId,
        checked: Callable[[], _CheckedAnswer],
        decided: Mapping[SiteId, Decision],
    ) -> Decision:
        """Take one answer's checks (``_check_answer``, run ahead on a worker thread); only an
        accepted update reaches the aggregator. ``decided``: the round's decisions so far."""
        round_index = current.context.round_index
        try:
            manifest, digest, source, admitted = checked()
        except (ObjectIntegrityError, ObjectNotFoundError, ObjectUnreadableError) as err:
            # bytes that fail the store's own checksum, that vanished, or that the store will
            # not give us (SSE-C, the hospital's own KMS key, refused): the hospital's doing,
            # never the federation's (a rogue write must not stop the aggregator)
            rejected = UpdateRejectedError(_read_fault_reason(err), str(err).splitlines()[0])
            return self._rejection(round_index, site_id, rejected)
        except UpdateRejectedError as rejected:
            return self._rejection(round_index, site_id, rejected)
        if manifest.declined is not None:  # e.g. its privacy budget would be exceeded
            self._remember(current, manifest)
            return declined_decision(manifest, self.clock())
        if admitted is not None:
            weight = self._weight(current, site_id, admitted.num_examples)
            try:
                self.aggregator.add_admitted(dataclasses.replace(admitted, num_examples=weight))
            except NonFiniteUpdateError as err:  # scanned as it was added (checks_finite)
                current.capped.pop(site_id, None)
                self._sum_again(current, decided)
                refused = UpdateRejectedError("non_finite", str(err))
                return self._rejection(round_index, site_id, refused)
        self._remember(current, manifest)
        log.info(
            "update_accepted",
            round_index=round_index,
            site_id=site_id,
            num_examples=manifest.num_examples,
        )
        return Decision(
            site_id=site_id,
            status="accepted",
            sha256=digest,
            sha256_source=source if digest is not None else None,
            nonce=manifest.nonce,
            num_examples=manifest.num_examples,
            decided_unix=self.clock(),
        )

    def _rejection(
        self, round_index: int, site_id: SiteId, rejected: UpdateRejectedError
    ) -> Decision:
        log.warning(
            "update_rejected",
            round_index=round_index,
            site_id=site_id,
            reason=rejected.reason,
            detail=rejected.detail,
        )
        return Decision(
            site_id=site_id,
            status="rejected",
            reason=rejected.reason,
            detail=rejected.detail[:500],
            decided_unix=self.clock(),
        )

    def _reject_secagg_refused(self, state: FederationState, current: _Round) -> FederationState:
        """Sites whose secure aggregation advert was refused are rejected with its reason
        (they are no participant, so their masked update is never read)."""
        if self.secagg is None or current.manifest.task != "train":
            return state
        refused = self.secagg.refused
        new = {s: err for s, err in refused.items() if s not in state.decisions}
        if not new:
            return state
        decisions = dict(state.decisions)
        for site_id, rejected in sorted(new.items()):
            decisions[site_id] = self._rejection(state.round_index, site_id, rejected)
            self.events.decided(state.round_index, decisions[site_id])
        # validated: a wrong decision never reaches state.json
        return self._save(
            FederationState.model_validate({**state.model_dump(), "decisions": decisions})
        )

    def _check_answer(self, current: _Round, site_id: SiteId) -> _CheckedAnswer:
        """Every admission check, cheapest first; raises ``UpdateRejectedError``.

        Runs on a worker thread (``checked_ahead``): it reads the exchange and the round's
        admission context, and changes nothing.

        In a training round the answer is the site's ``.safetensors`` file, manifest inside;
        a ``.json`` alone is accepted there only as a declined round.
        """
        ctx = current.context
        round_index = ctx.round_index
        if ctx.task == "train":
            try:  # one read: the store checks the size it learns before the bytes
                data, known = self.exchange.read_update_weights_verified(
                    round_index, site_id, ctx.max_update_bytes
                )
            except ObjectNotFoundError:
                data, known = None, None
            except ObjectTooLargeError as err:
                check_weights_size(err.size, ctx)  # too_large
                raise
            if data is not None:  # S3's stored checksum is the digest: no second hash
                manifest, digest, weights = check_update_file(data, site_id, ctx, known)
                self._check_evaluation(manifest)
                check_registered_claim(site_id, manifest.num_examples, current.registered)
                admitted = AdmittedUpdate(site_id, manifest.num_examples, data, weights)
                return manifest, digest, "computed" if known is None else "s3_checksum", admitted
        size = self.exchange.update_manifest_size(round_index, site_id)
        if size > ctx.max_manifest_bytes:
            raise UpdateRejectedError("too_large", f"manifest is {size} bytes")
        manifest = check_manifest(
            self.exchange.read_update_manifest_bytes(round_index, site_id), site_id, ctx
        )
        self._check_evaluation(manifest)
        if ctx.task == "train" and manifest.declined is None:
            raise UpdateRejectedError(
                "missing_tensors",
                f"a training answer is {site_id}.safetensors with its manifest inside; "
                f"{site_id} wrote only {site_id}.json",
            )
        return manifest, None, "computed", None

    def _check_evaluation(self, manifest: UpdateManifest) -> None:
        if manifest.evaluation is not None:
            _check_bins(manifest.evaluation, self.config.evaluation.histogram_bins)
        if manifest.validation is not None:
            _check_bins(manifest.validation, self.config.evaluation.histogram_bins)

    def _collect(self, state: FederationState, current: _Round) -> FederationState:
        """Admit answers until everyone answered, or the deadline with a quorum."""
        invited = set(current.context.invited_sites)  # secagg: the round's participants
        cfg = self.config.round
        unsaved = False
        while True:
            listed, foreign = current.keys.classify(
                self.exchange.list_update_keys(state.round_index)
            )
            if foreign:  # once per batch of new keys, never once per poll
                log.warning(
                    "foreign_keys",
                    round_index=state.round_index,
                    new=len(foreign),
                    total=current.keys.foreign_count,
                    samples=[sample(key) for key in foreign[:3]],
                    detail="keys under the round's updates prefix that are no invited site's "
                    "answer: ignored, and counted in result.json",
                )
            new = [s for s in listed if s not in state.decisions]
            if new:
                # revocations take effect at the next admission, before any redeploy
                current.context = dataclasses.replace(
                    current.context, revoked_sites=self._revoked_sites()
                )
                decisions = dict(state.decisions)
                # large updates: the next answers are read and checked on worker threads while
                # this one is added to the sum; decisions and the sum follow the order of `new`
                check = functools.partial(self._check_answer, current)
                for site_id, checked in checked_ahead(check, new, workers=current.check_workers):
                    decision = self._admit(current, site_id, checked, decisions)
                    del checked  # this update's bytes: one fewer in memory while checking on
                    decisions[site_id] = decision
                    self.events.decided(state.round_index, decision)
                state = state.model_copy(update={"decisions": decisions})
                unsaved = True
            accepted = sum(d.status == "accepted" for d in state.decisions.values())
            if invited <= state.decisions.keys():
                return state  # closing the round writes state.json, decisions and all
            now = self.clock()
            if unsaved and now - self._last_write >= cfg.checkpoint_interval_s:
                state, unsaved = self._save(state), False
            if now >= state.deadline_unix:
                if accepted >= cfg.min_sites:
                    return state
                state = self._below_quorum(state, accepted)
                continue
            if now - self._last_write > cfg.lease_s / 3:
                state = self._save(state)
            self.sleep(cfg.poll_interval_s)

    def _below_quorum(self, state: FederationState, accepted: int) -> FederationState:
        cfg = self.config.round
        if cfg.below_quorum == "extend" and state.extensions < cfg.max_extensions:
            log.warning(
                "round_extended",
                round_index=state.round_index,
                accepted=accepted,
                min_sites=cfg.min_sites,
                extend_s=cfg.extend_s,
            )
            return self._save(
                state.model_copy(
                    update={
                        "deadline_unix": state.deadline_unix + cfg.extend_s,
                        "extensions": state.extensions + 1,
                    }
                )
            )
        message = (
            f"round {state.round_index} closed below quorum: {accepted} accepted updates, "
            f"round.min_sites is {cfg.min_sites} (policy {cfg.below_quorum}, "
            f"{state.extensions} extensions); check the hospitals that did not answer"
        )
        self._save(state.model_copy(update={"phase": "failed", "message": message}))
        raise RoundFailedError(message)

    def _close(self, state: FederationState, current: _Round) -> FederationState:
        round_index = state.round_index
        manifest = current.manifest
        result = self.exchange.read_result(round_index)
        if result is None:
            next_weights: bytes | None = None
            if manifest.task == "train":
                next_weights = encode_weights(self.aggregator.finish())
            accepted = [d for d in state.decisions.values() if d.status == "accepted"]
            counted = [d.site_id for d in state.decisions.values() if d.status != "rejected"]
            masked = self.secagg is not None and manifest.task == "train"
            bins = self.config.evaluation.histogram_bins
            validation = sum_reports(
                [current.validations[s] for s in counted if s in current.validations],
                bins,
                self.secagg.masked_validation() if self.secagg is not None and masked else None,
            )
            evaluation = with_validation(
                summarise_evaluations(
                    [current.evaluations[s] for s in counted if s in current.evaluations],
                    bins,
                    self.secagg.masked_evaluation() if self.secagg is not None and masked else None,
                ),
                validation,
                self.config.evaluation.recalibrate,
            )
            losses = list(current.train_losses.values())
            total = sum(n for _, n in losses)
            result = RoundResult(
                federation_id=self.exchange.federation_id,
                round_index=round_index,
                task=manifest.task,
                global_sha256=manifest.sha256,
                next_global_sha256=sha256_hex(next_weights) if next_weights else None,
                accepted=accepted,
                rejected=[d for d in state.decisions.values() if d.status == "rejected"],
                declined=[d for d in state.decisions.values() if d.status == "declined"],
                privacy=round_privacy(self.aggregator, current.epsilons),
                missing=sorted(set(manifest.invited_sites) - state.decisions.keys()),
                evaluation=evaluation,
                recalibration=final_recalibration(
                    validation,
                    sum_reports(
                        [current.evaluations[s] for s in counted if s in current.evaluations],
                        bins,
                        None,
                    ).histogram,
                )
                if manifest.final and self.config.evaluation.recalibrate
                else None,
                stopped_early=manifest.task == "train"
                and round_index < self.config.rounds
                and stops_early(
                    self.exchange,
                    round_index,
                    evaluation,
                    self.config.evaluation.early_stopping_patience,
                ),
                withheld_evaluations=withheld_counts(current.withheld, state.decisions),
                train_loss=sum(loss * n for loss, n in losses) / total if total else None,
                started_unix=state.started_unix,
                closed_unix=self.clock(),
                extensions=state.extensions,
                config_hash=self.config_hash,
                foreign_keys=current.keys.foreign_count,
                foreign_key_samples=current.keys.foreign_samples,
                capped_weights={
                    d.site_id: current.capped[d.site_id]
                    for d in accepted
                    if d.site_id in current.capped
                },
            )
            self.exchange.write_result(result)
        elif result.next_global_sha256 is not None:
            next_weights = self._recompute_next(result)
        else:
            next_weights = None
        self._write_ledger(result)
        self.events.round_closed(result)
        log.info(
            "round_closed",
            round_index=round_index,
            accepted=len(result.accepted),
            rejected=len(result.rejected),
            missing=len(result.missing),
        )
        if manifest.final or next_weights is None:
            return self._save(state.model_copy(update={"phase": "done", "decisions": {}}))
        final = round_index >= self.config.rounds or result.stopped_early
        next_manifest = self._publish(
            round_index + 1, next_weights, manifest.sha256, "evaluate" if final else "train", final
        )
        return self._save(
            state.model_copy(
                update={
                    "round_index": round_index + 1,
                    "started_unix": next_manifest.created_unix,
                    "deadline_unix": next_manifest.deadline_unix,
                    "extensions": 0,
                    "decisions": {},
                    "strategy_state": self.aggregator.state_dict(),
                }
            )
        )

    def _recompute_next(self, result: RoundResult) -> bytes:
        """The next model of a round closed before a crash: the result names its sha256.

        Always re-aggregated from the replayed updates, even when the next global model was
        already published: ``finish()`` is what advances a stateful strategy (FedAdam's
        moments), and the ``state_dict()`` saved with the next round must be the one after
        this round, not the stale one ``state.json`` still holds.
        """
        data = encode_weights(self.aggregator.finish())
        if sha256_hex(data) != result.next_global_sha256:
            raise ExchangeError(
                f"re-aggregating round {result.round_index} after a restart gave a different "
                "model than result.json records; the admitted updates were altered, or the "
                "aggregator is not deterministic (a ServerAggregator must give the same model "
                "from the same updates and state)"
            )
        return data

    def _write_ledger(self, result: RoundResult) -> None:
        if self.exchange.read_ledger_entry(result.round_index) is not None:
            return
        previous = (
            self.exchange.read_ledger_entry(result.round_index - 1)
            if result.round_index > 1
            else None
        )
        entry = LedgerEntry(
            round_index=result.round_index,
            global_sha256=result.global_sha256,
            next_global_sha256=result.next_global_sha256,
            accepted=[(d.site_id, d.sha256 or "") for d in result.accepted],
            rejected=[(d.site_id, d.reason or "") for d in result.rejected],
            config_hash=result.config_hash,
            prev_hash=previous.entry_hash if previous else None,
            entry_hash="",
            sha256_sources=sha256_sources(result.accepted),
        )
        fields = entry_fields(entry, frozenset({"entry_hash"}))
        self.exchange.write_ledger_entry(
            LedgerEntry.model_validate({**fields, "entry_hash": chain_hash(fields)})
        )

    # ---- the loop ---------------------------------------------------------------------------

    def run(self) -> FederationState:
        """Run rounds until the final evaluation round closes; resumable at any point."""
        state = self._acquire()
        if state.phase == "failed":
            raise RoundFailedError(state.message or "the federation failed earlier")
        while state.phase == "collecting":
            structlog.contextvars.bind_contextvars(round_index=state.round_index)
            current = self._open(state)
            state = self._reject_secagg_refused(state, current)
            state = self._collect(state, current)
            if self.secagg is not None and current.manifest.task == "train":
                state = self.secagg.unmask(state, self._save)  # the aggregator learns the sum
            state = self._close(state, current)
        structlog.contextvars.unbind_contextvars("round_index")
        return state

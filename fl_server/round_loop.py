"""The aggregator's round loop: open, collect, close, in that order, round after round.

Each round, as the design sets it out (``docs/design.md``):

1. **open**: read the published global model, build the admission context, let the round's
   aggregation protocol open it (secure aggregation waits for the hospitals' keys here), and
   replay the decisions ``state.json`` already holds (a resumed round);
2. **collect**: admit answers as they arrive, checking them ahead on worker threads, until
   every invited site answered or the deadline passed with a quorum;
3. **the protocol's step** before closing (secure aggregation unmasks the sum);
4. **close**: write ``result.json``, chain its ledger entry, publish the next model and move
   ``state.json`` to the next round.

Every step is idempotent against what the exchange holds, so a crashed aggregator resumes
from the store: decisions are in ``state.json`` (owned by ``StateKeeper``), admitted updates
are write-once files that are re-read to rebuild the running sum, and a round whose
``result.json`` exists is never aggregated again.
"""

from __future__ import annotations

import dataclasses
import functools
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence

import structlog

from fl_core.admission import AdmissionContext
from fl_core.config import FederationConfig
from fl_core.errors import (
    ConfigError,
    ExchangeError,
    NonFiniteUpdateError,
    RoundFailedError,
    UpdateRejectedError,
)
from fl_core.exchange.ledger import entry_for
from fl_core.exchange.manifests import (
    Decision,
    FederationState,
    GlobalManifest,
    RoundResult,
    UpdateManifest,
)
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.registry import activate_verified_sites
from fl_core.hashing import sha256_hex
from fl_core.serialisation import decode_weights, encode_weights, read_tensor_specs
from fl_core.study import Study
from fl_core.types import SiteId, Weights
from fl_server.admitted import reread_admitted
from fl_server.aggregator import ServerAggregator
from fl_server.allocator import keep_freed_buffers
from fl_server.answer_checks import (
    READ_FAULTS,
    CheckedAnswer,
    check_answer,
    read_fault_reason,
    rejection,
)
from fl_server.answer_keys import RoundKeys, sample
from fl_server.lookahead import checked_ahead, workers_for
from fl_server.open_round import OpenRound
from fl_server.privacy_round import declined_decision
from fl_server.published_model import publish_final_model
from fl_server.publisher import Publisher
from fl_server.round_events import RoundEvents
from fl_server.round_history import RoundHistory
from fl_server.round_protocol import AggregationProtocol, ClearRound, InTheClear
from fl_server.round_result import round_result
from fl_server.secagg_server import SecureAggregation
from fl_server.state_keeper import StateKeeper
from fl_server.weight_bounds import RegisteredRows, weight_cap

log = structlog.get_logger("fedsilo.server")


class RoundLoop:
    """One federation's aggregator: runs its rounds from whatever the exchange holds."""

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
        self.config = config
        self.protocol: AggregationProtocol = (
            SecureAggregation(exchange, config, aggregator, clock, sleep)
            if config.privacy.secagg.enabled
            else InTheClear(aggregator)
        )
        self.aggregator = self.protocol.aggregator
        self.sites = list(sites)
        self.initial_weights = initial_weights
        self.events = events or RoundEvents()
        self.clock = clock
        self.sleep = sleep
        study = Study.of(config, features)
        self.config_hash = study.digest()
        self.keeper = StateKeeper(
            exchange,
            config.round,
            owner_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:12]}",
            self.config_hash,
            clock,
            sleep,
        )
        self.publisher = Publisher(exchange, config, study, sites, clock)
        self.history = RoundHistory(exchange)
        admission = config.admission
        self.registered = RegisteredRows(
            exchange, admission.max_num_examples, admission.max_manifest_bytes
        )
        keep_freed_buffers()

    # ---- the loop ---------------------------------------------------------------------------

    def run(self) -> FederationState:
        """Run rounds until the final evaluation round closes; resumable at any point."""
        state = self.keeper.acquire(self._first_state)
        self.aggregator.load_state_dict(state.strategy_state)
        if state.phase == "failed":
            raise RoundFailedError(state.message or "the federation failed earlier")
        while state.phase == "collecting":
            structlog.contextvars.bind_contextvars(round_index=state.round_index)
            current = self._open(state)
            state = self._reject_refused(state, current)
            state = self._collect(state, current)
            state = current.protocol.before_close(state, self.keeper)
            state = self._close(state, current)
        structlog.contextvars.unbind_contextvars("round_index")
        return state

    def _first_state(self) -> FederationState:
        """A new federation: round 1's model published, its state collecting."""
        if self.initial_weights is None:
            raise ConfigError(
                f"federation {self.exchange.federation_id} has no state yet and no initial "
                "model was given; start it with `fedsilo simulate` or pass the initial model"
            )
        first = encode_weights(self.aggregator.initial_global(self.initial_weights))
        manifest = self.publisher.publish(1, first, None, "train", False)
        return FederationState(
            federation_id=self.exchange.federation_id,
            round_index=1,
            phase="collecting",
            started_unix=manifest.created_unix,
            deadline_unix=manifest.deadline_unix,
            owner_id=self.keeper.owner_id,
            lease_expires_unix=0.0,
            config_hash=self.config_hash,
            strategy_state=self.aggregator.state_dict(),
        )

    # ---- 1. open ----------------------------------------------------------------------------

    def _open(self, state: FederationState) -> OpenRound:
        manifest = self.exchange.read_global_manifest(state.round_index)
        if manifest is None:
            raise ExchangeError(
                f"round {state.round_index} has state but no global model in "
                f"{self.exchange.describe()}; the exchange was altered"
            )
        global_bytes = self.exchange.read_global_weights(manifest)
        context = self._admission_context(manifest, global_bytes)
        training = manifest.task == "train"
        protocol = (
            self.protocol.open(state, manifest, context, self.keeper)
            if training
            else ClearRound(context)
        )
        weights = decode_weights(global_bytes) if training else None
        if weights is not None:
            self.aggregator.set_invited_sites(manifest.invited_sites)
            self.aggregator.begin_round(state.round_index, weights)
        current = OpenRound(
            manifest,
            weights,
            protocol,
            RoundKeys(self.exchange.layout, state.round_index, manifest.invited_sites),
            # an answer is the size of the global model in a training round, a manifest else
            check_workers=(
                workers_for(len(global_bytes), hashed=not self.exchange.store.vouches_for_updates)
                if training
                else 0
            ),
        )
        if training:
            self._bound_weights(current)
        for decision in state.decisions.values():
            if decision.status in ("accepted", "declined"):
                self._replay(current, decision)
        self.events.round_opened(manifest)
        return current

    def _admission_context(self, manifest: GlobalManifest, global_bytes: bytes) -> AdmissionContext:
        nonces, digests = self.history.accepted_before(manifest.round_index)
        admission = self.config.admission
        return AdmissionContext(
            federation_id=self.exchange.federation_id,
            round_index=manifest.round_index,
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

    def _revoked_sites(self) -> frozenset[SiteId]:
        """Revoked sites, after activating those whose onboarding preflight passed."""
        for site_id in activate_verified_sites(self.exchange, self.clock()):
            log.info("site_activated", site_id=site_id)
        return frozenset(
            r.site_id for r in self.exchange.list_registrations() if r.status == "revoked"
        )

    def _bound_weights(self, current: OpenRound) -> None:
        """The registered rows and the weight cap of a training round (``weight_bounds``).

        A round that closed before a restart has a result.json, whose capped weights are the
        ones its recorded model was built with: a report that arrived since must not change
        them.
        """
        current.registered = self.registered.of(current.manifest.invited_sites)
        if self.protocol.caps_weights:
            current.weight_cap = weight_cap(
                current.registered.values(), self.config.round.max_weight_share
            )
        result = self.exchange.read_result(current.round_index)
        if result is not None:
            current.recorded_weights = dict(result.capped_weights)

    def _replay(self, current: OpenRound, decision: Decision) -> None:
        """Re-add an answer admitted before a restart; it must be byte-identical."""
        update = UpdateManifest.model_validate_json(
            self.exchange.read_update_manifest_bytes(current.round_index, decision.site_id)
        )
        if update.nonce != decision.nonce:
            raise ExchangeError(
                f"update manifest of site {decision.site_id} round {current.round_index} "
                "changed after admission; the exchange was altered"
            )
        current.remember(update)
        if current.training and decision.status == "accepted":
            self._add_again(current, decision)

    def _add_again(self, current: OpenRound, decision: Decision) -> None:
        weight = self._weight(current, decision.site_id, decision.num_examples)
        self.aggregator.add_admitted(
            reread_admitted(self.exchange, current.round_index, decision, weight)
        )

    def _reject_refused(self, state: FederationState, current: OpenRound) -> FederationState:
        """Sites the protocol refused while opening (a refused secure aggregation advert) are
        rejected with its reason: they are no participant, so their answer is never read."""
        new = {s: e for s, e in current.protocol.refused.items() if s not in state.decisions}
        if not new:
            return state
        decisions = dict(state.decisions)
        for site_id, rejected in sorted(new.items()):
            decisions[site_id] = rejection(state.round_index, site_id, rejected, self.clock())
            self.events.decided(state.round_index, decisions[site_id])
        return self.keeper.save(state.with_decisions(decisions))

    # ---- 2. collect -------------------------------------------------------------------------

    def _collect(self, state: FederationState, current: OpenRound) -> FederationState:
        """Admit answers until everyone answered, or the deadline with a quorum."""
        cfg = self.config.round
        while True:
            new = self._listed_new(state, current)
            if new:
                state = state.with_decisions(self._decide(state, current, new))
            invited = current.protocol.context.invited_sites  # secagg: the participants
            if invited <= state.decisions.keys():
                return state  # closing the round writes state.json, decisions and all
            if self.clock() >= state.deadline_unix:
                accepted = sum(d.status == "accepted" for d in state.decisions.values())
                if accepted >= cfg.min_sites:
                    return state
                state = self._below_quorum(state, accepted)
                continue
            state = self.keeper.checkpoint(state)
            self.sleep(cfg.poll_interval_s)

    def _listed_new(self, state: FederationState, current: OpenRound) -> list[SiteId]:
        """Invited sites whose answer is listed and not yet decided."""
        listed, foreign = current.keys.classify(self.exchange.list_update_keys(state.round_index))
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
        return [s for s in listed if s not in state.decisions]

    def _decide(
        self, state: FederationState, current: OpenRound, new: Sequence[SiteId]
    ) -> dict[SiteId, Decision]:
        """The round's decisions with ``new``'s answers decided, in the order of ``new``."""
        # revocations take effect at the next admission, before any redeploy
        context = dataclasses.replace(current.protocol.context, revoked_sites=self._revoked_sites())
        decisions = dict(state.decisions)
        # large updates: the next answers are read and checked on worker threads while this
        # one is added to the sum
        check = functools.partial(
            check_answer,
            self.exchange,
            context,
            current.registered,
            self.config.evaluation.histogram_bins,
        )
        for site_id, checked in checked_ahead(check, new, workers=current.check_workers):
            decision = self._admit(current, site_id, checked, decisions)
            del checked  # this update's bytes: one fewer in memory while checking on
            decisions[site_id] = decision
            self.events.decided(state.round_index, decision)
        return decisions

    def _admit(
        self,
        current: OpenRound,
        site_id: SiteId,
        checked: Callable[[], CheckedAnswer],
        decided: Mapping[SiteId, Decision],
    ) -> Decision:
        """Take one answer's checks (run ahead on a worker thread); only an accepted update
        reaches the aggregator. ``decided``: the round's decisions so far."""
        round_index = current.round_index
        try:
            answer = checked()
        except READ_FAULTS as err:  # a rogue write must not stop the aggregator
            rejected = UpdateRejectedError(read_fault_reason(err), str(err).splitlines()[0])
            return rejection(round_index, site_id, rejected, self.clock())
        except UpdateRejectedError as rejected:
            return rejection(round_index, site_id, rejected, self.clock())
        manifest = answer.manifest
        if manifest.declined is not None:  # e.g. its privacy budget would be exceeded
            current.remember(manifest)
            return declined_decision(manifest, self.clock())
        if answer.update is not None:
            weight = self._weight(current, site_id, answer.update.num_examples)
            try:
                self.aggregator.add_admitted(
                    dataclasses.replace(answer.update, num_examples=weight)
                )
            except NonFiniteUpdateError as err:  # scanned as it was added (checks_finite)
                current.capped.pop(site_id, None)
                self._sum_again(current, decided)
                refused = UpdateRejectedError("non_finite", str(err))
                return rejection(round_index, site_id, refused, self.clock())
        current.remember(manifest)
        log.info(
            "update_accepted",
            round_index=round_index,
            site_id=site_id,
            num_examples=manifest.num_examples,
        )
        return Decision(
            site_id=site_id,
            status="accepted",
            sha256=answer.sha256,
            sha256_source=answer.sha256_source if answer.sha256 is not None else None,
            nonce=manifest.nonce,
            num_examples=manifest.num_examples,
            decided_unix=self.clock(),
        )

    def _sum_again(self, current: OpenRound, decided: Mapping[SiteId, Decision]) -> None:
        """Begin the round's sum again from the updates accepted so far, in the order they
        were decided (as a resumed round does): an update found non-finite while it was
        added left part of itself in the sum."""
        if current.global_weights is None:
            raise ExchangeError(f"round {current.round_index} sums no updates: it evaluates")
        self.aggregator.begin_round(current.round_index, current.global_weights)
        for decision in decided.values():
            if decision.status == "accepted":
                self._add_again(current, decision)

    def _weight(self, current: OpenRound, site_id: SiteId, claimed: int) -> int:
        """An accepted training answer's FedAvg weight; a capped one is named."""
        weight = current.weight_of(site_id, claimed)
        if weight < claimed:
            current.capped[site_id] = weight
            log.info(
                "weight_capped",
                round_index=current.round_index,
                site_id=site_id,
                num_examples=claimed,
                weight=weight,
                max_weight_share=self.config.round.max_weight_share,
            )
        return weight

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
            return self.keeper.save(state.extended(cfg.extend_s))
        raise self.keeper.fail(
            state,
            f"round {state.round_index} closed below quorum: {accepted} accepted updates, "
            f"round.min_sites is {cfg.min_sites} (policy {cfg.below_quorum}, "
            f"{state.extensions} extensions); check the hospitals that did not answer",
        )

    # ---- 4. close ---------------------------------------------------------------------------

    def _close(self, state: FederationState, current: OpenRound) -> FederationState:
        manifest = current.manifest
        result = self.exchange.read_result(current.round_index)
        if result is None:
            next_weights = encode_weights(self.aggregator.finish()) if current.training else None
            result = round_result(
                self.exchange,
                self.config,
                state,
                current,
                self.aggregator,
                next_weights,
                self.clock(),
                self.history.losses_before(current.round_index),
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
            round_index=current.round_index,
            accepted=len(result.accepted),
            rejected=len(result.rejected),
            missing=len(result.missing),
        )
        if manifest.final:
            publish_final_model(self.exchange, manifest, result, self.clock)
        if manifest.final or next_weights is None:
            return self.keeper.save(state.done())
        final = current.round_index >= self.config.rounds or result.stopped_early
        next_manifest = self.publisher.publish(
            current.round_index + 1,
            next_weights,
            manifest.sha256,
            "evaluate" if final else "train",
            final,
        )
        return self.keeper.save(
            state.next_round(
                next_manifest.created_unix,
                next_manifest.deadline_unix,
                self.aggregator.state_dict(),
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
        """The round's ledger entry, chained to the previous one (written once)."""
        if self.exchange.read_ledger_entry(result.round_index) is not None:
            return
        previous = (
            self.exchange.read_ledger_entry(result.round_index - 1)
            if result.round_index > 1
            else None
        )
        self.exchange.write_ledger_entry(entry_for(result, previous))

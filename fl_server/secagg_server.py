"""Secure aggregation as a phase of the training round (the aggregator's side).

``SecureAggregation`` is the round's protocol (``fl_server.round_protocol``). Opening a
training round publishes the roster (invited sites' long-term public keys from their
registrations, threshold, field), waits for the hospitals' adverts, publishes the setup (who
participates, their round mask keys) and admits from then on only uint64 ring elements from
participants. Before the round closes (``SecAggRound.before_close``), survivors S are the
participants whose masked update was admitted and dropped D the rest: the one write-once
unmask request is published, the survivors' answers awaited, and ``b_u`` for u in S and the
mask key of v for v in D reconstructed from ``t`` shares each (``fl_core.secagg.unmasking``),
which is what lets the aggregator (``SecAggAggregator``) remove the masks.

Everything is re-derived from write-once documents on a restart: a resumed aggregator reads
the roster, setup, request and answers it already published or received.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import structlog
from pydantic import ValidationError

from fl_core.admission import AdmissionContext
from fl_core.config import FederationConfig, SecAggConfig
from fl_core.errors import (
    ConfigError,
    ExchangeError,
    RoundFailedError,
    UpdateRejectedError,
)
from fl_core.exchange.manifests import FederationState, GlobalManifest, UpdateManifest
from fl_core.exchange.protocol import Exchange
from fl_core.secagg import transport
from fl_core.secagg.field import FieldParams, fractional_bits_for
from fl_core.secagg.masked_evaluation import (
    EVALUATION_TENSOR,
    VALIDATION_TENSOR,
    MaskedEvaluationSum,
    segment_spec,
)
from fl_core.secagg.messages import (
    RosterEntry,
    SecAggAdvert,
    SecAggRoster,
    SecAggSetup,
    SecAggUnmaskAnswer,
    SecAggUnmaskRequest,
)
from fl_core.secagg.threshold import check_threshold, default_threshold
from fl_core.secagg.unmasking import reconstruct_material
from fl_core.serialisation import TensorSpec
from fl_core.types import SiteId
from fl_server.admitted import reread_admitted
from fl_server.aggregator import ServerAggregator
from fl_server.secagg_aggregator import SecAggAggregator
from fl_server.state_keeper import StateKeeper

log = structlog.get_logger("fedsilo.server.secagg")


def _max_document_bytes(num_sites: int) -> int:
    """The most an honest advert or unmask answer of a round of ``num_sites`` takes: one
    entry a site (encrypted shares of at most 1 kB of hex, or a 132-character share)."""
    return 4096 + 1536 * num_sites


def _refusal(err: UpdateRejectedError | ExchangeError) -> UpdateRejectedError:
    """A hospital's document refused as a rejection: its reason, or ``unreadable`` where the
    store could not give its bytes (e.g. they fail the store's own checksum)."""
    if isinstance(err, UpdateRejectedError):
        return err
    return UpdateRejectedError("unreadable", str(err).splitlines()[0] if str(err) else "")


def _log_refused(event: str, site_id: SiteId, err: UpdateRejectedError | ExchangeError) -> None:
    rejected = _refusal(err)
    log.warning(event, site_id=site_id, reason=rejected.reason, detail=rejected.detail[:300])


@dataclasses.dataclass
class _Waiting:
    """How a phase waits on the hospitals: polling, keeping the aggregator's lease."""

    keeper: StateKeeper
    poll_interval_s: float
    clock: Callable[[], float]
    sleep: Callable[[float], None]

    def pause(self, state: FederationState) -> FederationState:
        state = self.keeper.keep_alive(state)
        self.sleep(self.poll_interval_s)
        return state

    def below_threshold(
        self, state: FederationState, threshold: int, heard: str, advice: str
    ) -> RoundFailedError:
        """Fewer than ``threshold`` hospitals took a step: the round fails."""
        return self.fail(
            state,
            f"round {state.round_index}: {heard}, fewer than the secure aggregation threshold "
            f"t={threshold}; {advice}",
        )

    def fail(self, state: FederationState, message: str) -> RoundFailedError:
        log.error("secagg_round_failed", round_index=state.round_index, detail=message)
        return self.keeper.fail(state, message)


class SecureAggregation:
    """The secure aggregation protocol of a federation's training rounds."""

    caps_weights = False  # each hospital weights its own update; the sum hides the weights

    def __init__(
        self,
        exchange: Exchange,
        config: FederationConfig,
        strategy: ServerAggregator,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``strategy``: the linear strategy the unmasked weighted mean is handed to."""
        self.exchange = exchange
        self.config = config
        self.settings = config.privacy.secagg
        self.clock = clock
        self.sleep = sleep
        self.aggregator = SecAggAggregator(strategy, config.evaluation.histogram_bins)
        self._refusals: dict[SiteId, UpdateRejectedError] = {}
        """Adverts refused so far while a round opens (each logged once, not every poll)."""

    def _key(self, round_index: int, document: str) -> str:
        return self.exchange.layout.secagg_global_key(round_index, document)

    # -- roster and setup --

    def build_roster(self, manifest: GlobalManifest) -> SecAggRoster:
        sites = sorted(manifest.invited_sites)
        keys = {r.site_id: r.secagg_public_key for r in self.exchange.list_registrations()}
        missing = [site for site in sites if not keys.get(site)]
        if missing:
            raise ConfigError(
                f"privacy.secagg is on but sites {missing[:5]} have no secagg public key in "
                "their registration; re-onboard them (`fedsilo onboard request` makes the key)"
            )
        threshold = check_threshold(
            self.settings.threshold or default_threshold(len(sites)), len(sites)
        )
        if self.config.round.min_sites < threshold:
            log.warning(
                "secagg_quorum_below_threshold",
                min_sites=self.config.round.min_sites,
                threshold=threshold,
                detail="a round closing with fewer than t masked updates fails instead of "
                "extending; raise round.min_sites to t",
            )
        max_weight = self.config.admission.max_num_examples
        return SecAggRoster(
            federation_id=manifest.federation_id,
            round_index=manifest.round_index,
            global_sha256=manifest.sha256,
            sites=[RosterEntry(site_id=s, public_key=str(keys[s])) for s in sites],
            threshold=threshold,
            modulus_bits=self.settings.modulus_bits,
            fractional_bits=fractional_bits_for(
                self.settings.modulus_bits, self.settings.clip, max_weight, len(sites)
            ),
            clip=self.settings.clip,
            max_weight=max_weight,
        )

    def _valid_advert(self, site_id: SiteId, roster: SecAggRoster) -> SecAggAdvert | None:
        """A site's advert, or None (not there yet, or rejected: logged with its reason and
        kept in ``_refusals``, and the site is no participant of the round)."""
        key = self.exchange.layout.secagg_update_key(roster.round_index, site_id, "advert")
        logged = self._refusals.pop(site_id, None) is not None  # logged once, not every poll
        try:
            advert = transport.read_from_site(
                self.exchange, key, SecAggAdvert, _max_document_bytes(len(roster.sites))
            )
        except (UpdateRejectedError, ExchangeError) as err:
            if not logged:
                _log_refused("secagg_advert_rejected", site_id, err)
            self._refusals[site_id] = _refusal(err)
            return None
        if advert is None:
            return None
        expected = {entry.site_id for entry in roster.sites}
        if (
            advert.site_id != site_id
            or advert.round_index != roster.round_index
            or advert.roster_sha256 != transport.digest(roster)
            or set(advert.shares) != expected
        ):
            refused = UpdateRejectedError(
                "malformed_secagg",
                "advert names another site, round or roster, or holds shares for other sites "
                "than the roster's",
            )
            if not logged:
                _log_refused("secagg_advert_rejected", site_id, refused)
            self._refusals[site_id] = refused
            return None
        return advert

    def _declined(self, site_id: SiteId, round_index: int) -> bool:
        """The site answered the round with a decline (its site policy refused the round): as
        final as a refused advert, and its answer is admitted as a declined decision."""
        try:
            data = self.exchange.read_standalone_manifest_bytes(
                round_index, site_id, self.config.admission.max_manifest_bytes
            )
            answer = UpdateManifest.model_validate_json(data)
        except (ExchangeError, ValidationError):  # too large: admission names it too_large
            return False
        return answer.declined is not None and (answer.site_id, answer.round_index) == (
            site_id,
            round_index,
        )

    def open(
        self,
        state: FederationState,
        manifest: GlobalManifest,
        context: AdmissionContext,
        keeper: StateKeeper,
    ) -> SecAggRound:
        """Roster, adverts, setup: the round, admitting masked updates from participants."""
        r = manifest.round_index
        waiting = _Waiting(keeper, self.config.round.poll_interval_s, self.clock, self.sleep)
        roster = transport.read(self.exchange, self._key(r, "roster"), SecAggRoster)
        if roster is None:
            roster = self.build_roster(manifest)
            transport.put_once(self.exchange, self._key(r, "roster"), roster)
            log.info("secagg_roster_published", round_index=r, threshold=roster.threshold)
        setup = transport.read(self.exchange, self._key(r, "setup"), SecAggSetup)
        sites = [entry.site_id for entry in roster.sites]
        self._refusals = {}
        if setup is None:
            adverts, declined = self._collect_adverts(state, roster, waiting)
            setup = SecAggSetup(
                federation_id=roster.federation_id,
                round_index=r,
                roster_sha256=transport.digest(roster),
                participants={s: a.mask_public_key for s, a in sorted(adverts.items())},
            )
            transport.put_once(self.exchange, self._key(r, "setup"), setup)
            log.info("secagg_setup_published", round_index=r, participants=len(adverts))
        else:  # resumed: the roster's other sites are read again for why they were left out
            read = {s: self._valid_advert(s, roster) for s in sites}
            adverts = {s: a for s in setup.participants if (a := read.get(s)) is not None}
            declined = {s for s in sites if s not in setup.participants and self._declined(s, r)}
        refused = {s: e for s, e in self._refusals.items() if s not in setup.participants}
        specs = {
            name: TensorSpec("uint64", spec.shape) for name, spec in context.tensor_specs.items()
        }
        specs[EVALUATION_TENSOR] = segment_spec(self.config.evaluation.histogram_bins)
        specs[VALIDATION_TENSOR] = segment_spec(self.config.evaluation.histogram_bins)
        masked_context = dataclasses.replace(
            context,
            tensor_specs=specs,
            field_bits=roster.modulus_bits,
            invited_sites=frozenset(setup.participants) | declined,  # declines are answers
        )
        return SecAggRound(
            exchange=self.exchange,
            settings=self.settings,
            aggregator=self.aggregator,
            waiting=waiting,
            roster=roster,
            setup=setup,
            adverts=adverts,
            context=masked_context,
            refused=refused,
        )

    def _collect_adverts(
        self, state: FederationState, roster: SecAggRoster, waiting: _Waiting
    ) -> tuple[dict[SiteId, SecAggAdvert], set[SiteId]]:
        """Every site's advert, refusal or decline, or as many as came in the wait."""
        r = roster.round_index
        sites = [entry.site_id for entry in roster.sites]
        wait_s = min(self.settings.advert_timeout_s, self.config.round.deadline_s)
        give_up = self.clock() + wait_s
        while True:
            adverts = {s: a for s in sites if (a := self._valid_advert(s, roster)) is not None}
            declined = {s for s in sites if s not in adverts and self._declined(s, r)}
            # a refused advert or a declined round is final
            heard = len(adverts.keys() | self._refusals.keys() | declined)
            if heard == len(sites) or self.clock() >= give_up:
                break
            state = waiting.pause(state)
        if len(adverts) < roster.threshold:
            raise waiting.below_threshold(
                state,
                roster.threshold,
                f"only {len(adverts)} of {len(sites)} hospitals sent their secure "
                f"aggregation keys in {wait_s:.0f} s",
                "check the hospitals that did not",
            )
        return adverts, declined


@dataclasses.dataclass
class SecAggRound:
    """One training round under secure aggregation, from its setup to the unmask."""

    exchange: Exchange
    settings: SecAggConfig
    aggregator: SecAggAggregator
    waiting: _Waiting
    roster: SecAggRoster
    setup: SecAggSetup
    adverts: dict[SiteId, SecAggAdvert]
    context: AdmissionContext
    refused: dict[SiteId, UpdateRejectedError]
    """Invited sites left out of the round because their advert was refused, and why: the
    round loop records each as a rejection, so the site's masked update is never read and its
    reason reaches result.json and the ledger."""

    def masked_evaluation(self) -> MaskedEvaluationSum | None:
        """The evaluations this round's survivors added to the masked sum."""
        return self.aggregator.masked_evaluation()

    def masked_validation(self) -> MaskedEvaluationSum | None:
        """The validation reports this round's survivors added to the masked sum."""
        return self.aggregator.masked_evaluation(VALIDATION_TENSOR)

    def _key(self, document: str) -> str:
        return self.exchange.layout.secagg_global_key(self.roster.round_index, document)

    def _request(self, state: FederationState) -> SecAggUnmaskRequest:
        found = transport.read(self.exchange, self._key("unmask"), SecAggUnmaskRequest)
        if found is not None:
            return found
        participants = set(self.setup.participants)
        accepted = {s for s, d in state.decisions.items() if d.status == "accepted"}
        survivors = sorted(participants & accepted)
        dropped = sorted(participants - accepted)
        if len(survivors) < self.roster.threshold:
            raise self.waiting.below_threshold(
                state,
                self.roster.threshold,
                f"{len(survivors)} of {len(participants)} hospitals delivered a masked update "
                f"({len(dropped)} dropped)",
                "the sum cannot be unmasked. Check the dropped hospitals, or lower "
                "privacy.secagg.threshold (it must stay above half)",
            )
        request = SecAggUnmaskRequest(
            federation_id=self.roster.federation_id,
            round_index=state.round_index,
            setup_sha256=transport.digest(self.setup),
            survivors=survivors,
            dropped=dropped,
            relayed={
                recipient: {
                    sender: advert.shares[recipient] for sender, advert in self.adverts.items()
                }
                for recipient in survivors
            },
        )
        transport.put_once(self.exchange, self._key("unmask"), request)
        log.info(
            "secagg_unmask_requested",
            round_index=state.round_index,
            survivors=len(survivors),
            dropped=len(dropped),
        )
        return request

    def _answers(
        self, state: FederationState, request: SecAggUnmaskRequest
    ) -> tuple[FederationState, dict[SiteId, SecAggUnmaskAnswer]]:
        r = state.round_index
        digest = transport.digest(request)
        give_up = self.waiting.clock() + self.settings.unmask_timeout_s
        answers: dict[SiteId, SecAggUnmaskAnswer] = {}
        max_bytes = _max_document_bytes(len(request.survivors) + len(request.dropped))
        while True:
            for site_id in request.survivors:
                if site_id in answers:
                    continue
                key = self.exchange.layout.secagg_update_key(r, site_id, "answer")
                try:
                    answer = transport.read_from_site(
                        self.exchange, key, SecAggUnmaskAnswer, max_bytes
                    )
                except (UpdateRejectedError, ExchangeError) as err:
                    _log_refused("secagg_answer_rejected", site_id, err)
                    continue
                if (
                    answer is not None
                    and answer.site_id == site_id
                    and answer.request_sha256 == digest
                ):
                    answers[site_id] = answer
            if len(answers) == len(request.survivors) or self.waiting.clock() >= give_up:
                return state, answers
            state = self.waiting.pause(state)

    def _late_rejected(
        self, state: FederationState, request: SecAggUnmaskRequest, keeper: StateKeeper
    ) -> FederationState:
        """Updates admitted after the unmask request was published (only on a resume) are not
        in the sum the request unmasks: rejected as ``secagg_late``."""
        late = {
            s: d for s, d in state.decisions.items()
            if d.status == "accepted" and s not in request.survivors
        }  # fmt: skip
        if not late:
            return state
        decisions = dict(state.decisions)
        for site_id, decision in late.items():
            decisions[site_id] = decision.overruled(
                "secagg_late", "arrived after the secure aggregation unmask request"
            )
        return keeper.save(state.with_decisions(decisions))

    def before_close(self, state: FederationState, keeper: StateKeeper) -> FederationState:
        """Request, answers, reconstruction; leaves the aggregator ready to ``finish``."""
        r = state.round_index
        request = self._request(state)
        state = self._late_rejected(state, request, keeper)
        if set(self.aggregator.summed_sites) != set(request.survivors):
            survivors = [state.decisions[s] for s in request.survivors]
            self.aggregator.resum(lambda: [reread_admitted(self.exchange, r, d) for d in survivors])
        state, answers = self._answers(state, request)
        if len(answers) < self.roster.threshold:
            raise self.waiting.below_threshold(
                state,
                self.roster.threshold,
                f"{len(answers)} of {len(request.survivors)} surviving hospitals answered the "
                f"unmask request in {self.settings.unmask_timeout_s:.0f} s",
                "the sum cannot be unmasked",
            )
        found = reconstruct_material(
            self.roster,
            self.setup,
            self.adverts,
            request,
            answers,
            self.aggregator.summed_sites,
        )
        for share in found.rejected_shares:
            log.warning(
                "secagg_share_rejected",
                holder=share.holder,
                site_id=share.site_id,
                detail=share.detail,
            )
        if found.problems:
            raise self.waiting.fail(
                state,
                f"round {r}: secure aggregation could not unmask: {'; '.join(found.problems[:5])}",
            )
        self.aggregator.set_unmask(
            FieldParams(self.roster.modulus_bits, self.roster.fractional_bits, self.roster.clip),
            found.material,
        )
        log.info(
            "secagg_unmasked", round_index=r, answers=len(answers), dropped=len(request.dropped)
        )
        return state

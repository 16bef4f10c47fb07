"""The aggregator's side of secure aggregation: a round-loop phase and an aggregator.

``SecAggServer`` adds two steps to a training round (``RoundLoop`` calls them):

* ``open_round`` (after the global model is published): publish the roster (invited sites'
  long-term public keys from their registrations, threshold, field), wait for the hospitals'
  adverts, publish the setup (who participates, their round mask keys), and admit from then on
  only uint64 ring elements from participants.
* ``unmask`` (after collection closes): survivors S are the participants whose masked update
  was admitted, dropped D the rest; publish the one write-once unmask request, wait for the
  survivors' answers, reconstruct ``b_u`` for u in S and the mask key of v for v in D from
  ``t`` shares each, and hand the aggregator what removes the masks.

``SecAggAggregator`` sums the masked updates as they are admitted (uint64 adds that wrap mod
2**64, one update in memory at a time) and, at ``finish``, removes the masks, dequantises the
weighted sum and hands the weighted mean to the configured linear strategy (FedAvg, FedAvgM,
FedAdam, ...) as a single update: what the aggregator ever learns is that mean, and the summed
evaluations of the hospitals whose disclosure floor kept theirs out of the clear
(``fl_core.secagg.masked_evaluation``).

Everything is re-derived from write-once documents on a restart: a resumed aggregator reads
the roster, setup, request and answers it already published or received.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog
from pydantic import ValidationError

from fl_core.admission import AdmissionContext
from fl_core.config import FederationConfig
from fl_core.errors import (
    AggregationError,
    ConfigError,
    ExchangeError,
    RoundFailedError,
    UpdateRejectedError,
)
from fl_core.exchange.manifests import Decision, FederationState, GlobalManifest, UpdateManifest
from fl_core.exchange.protocol import Exchange
from fl_core.secagg import masking, shamir, transport
from fl_core.secagg.field import U64, FieldParams, dequantise, fractional_bits_for
from fl_core.secagg.masked_evaluation import (
    EVALUATION_TENSOR,
    VALIDATION_TENSOR,
    MaskedEvaluationSum,
    decode_evaluation,
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
from fl_core.serialization import TensorSpec, sha256_hex, specs_of, view_weights
from fl_core.types import SiteId, Weights
from fl_server.aggregator import AdmittedUpdate, ServerAggregator

log = structlog.get_logger("fedsilo.server.secagg")

Save = Callable[[FederationState], FederationState]


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


def default_threshold(num_sites: int) -> int:
    """``n - floor(n/3)``: up to a third of the sites may drop out, and ``t > n/2``."""
    return num_sites - num_sites // 3


def check_threshold(threshold: int, num_sites: int) -> int:
    if not num_sites // 2 + 1 <= threshold <= num_sites:
        raise ConfigError(
            f"privacy.secagg.threshold {threshold} must be in {num_sites // 2 + 1}..{num_sites} "
            f"for {num_sites} hospitals (more than half, so no minority can unmask a site); "
            "leave it unset for n - floor(n/3)"
        )
    return threshold


# ---- the aggregator ------------------------------------------------------------------------


@dataclass(frozen=True)
class UnmaskMaterial:
    """What removes the masks from the survivors' sum."""

    survivors: dict[SiteId, int]  # site -> num_examples
    self_seeds: list[bytes]
    dropped_pairs: list[tuple[SiteId, SiteId, bytes]]


class SecAggAggregator(ServerAggregator):
    """Sums masked updates mod 2**b; ``finish`` unmasks the sum and applies ``inner``.

    Each masked update also carries the evaluation segment (``masked_evaluation``): the sum
    splits into the weights part, which ``finish`` aggregates, and the evaluation part, which
    ``masked_evaluation`` reads for the round's pooled metrics.
    """

    def __init__(self, inner: ServerAggregator, num_bins: int) -> None:
        self.inner = inner
        self.num_bins = num_bins
        self._specs: dict[str, TensorSpec] = {}
        self._unmasked: Weights | None = None
        self.params: FieldParams | None = None
        self._round = 0
        self._global: Weights = {}
        self._total: U64 | None = None
        self._summed: dict[SiteId, int] = {}
        self._material: UnmaskMaterial | None = None

    def initial_global(self, weights: Weights) -> Weights:
        return self.inner.initial_global(weights)

    def set_invited_sites(self, sites: Sequence[SiteId]) -> None:
        self.inner.set_invited_sites(sites)

    def begin_round(self, round_index: int, global_weights: Weights) -> None:
        self._round = round_index
        self._global = global_weights
        self._specs = {
            **{name: TensorSpec("uint64", s.shape) for name, s in specs_of(global_weights).items()},
            EVALUATION_TENSOR: segment_spec(self.num_bins),
            VALIDATION_TENSOR: segment_spec(self.num_bins),
        }
        self._total = np.zeros(masking.flat_size(self._specs), np.uint64)
        self._summed = {}
        self._material = None
        self._unmasked = None

    def add(self, weights: Weights, num_examples: int) -> None:
        raise AggregationError("secure aggregation adds updates through add_admitted only")

    def add_admitted(self, update: AdmittedUpdate) -> None:
        if self._total is None:
            raise AggregationError("add_admitted() before begin_round()")
        if update.site_id in self._summed:
            raise AggregationError(f"site {update.site_id} was added twice this round")
        np.add(self._total, masking.flatten_u64(update.weights), out=self._total)
        self._summed[update.site_id] = update.num_examples

    @property
    def summed_sites(self) -> dict[SiteId, int]:
        return dict(self._summed)

    def resum(self, updates: Callable[[], Sequence[AdmittedUpdate]]) -> None:
        """Start the sum again from exactly the survivors' updates (after a restart admitted
        an update that arrived after the unmask request, which may not count)."""
        self.begin_round(self._round, self._global)
        for update in updates():
            self.add_admitted(update)

    def set_unmask(self, params: FieldParams, material: UnmaskMaterial) -> None:
        if set(material.survivors) != set(self._summed):
            raise AggregationError(
                f"secure aggregation summed {sorted(self._summed)} but the survivors are "
                f"{sorted(material.survivors)}; re-sum first"
            )
        self.params = params
        self._material = material
        self._unmasked = None

    def _unmasked_parts(self) -> tuple[Weights, FieldParams, UnmaskMaterial]:
        """The survivors' summed segments by tensor name, masks removed (once a round)."""
        if self._material is None or self.params is None or self._total is None:
            raise AggregationError("finish() before the secure aggregation unmask step")
        if self._unmasked is None:
            total = masking.remove_masks(
                self._total, self._material.self_seeds, self._material.dropped_pairs, self.params
            )
            self._unmasked = masking.unflatten(total, self._specs)
        return self._unmasked, self.params, self._material

    def masked_evaluation(self, tensor: str = EVALUATION_TENSOR) -> MaskedEvaluationSum | None:
        """The evaluations the survivors added to the sum (None: none, or an impossible sum,
        which is logged: a hostile segment spoils the pooled evaluation, never the round);
        ``tensor`` ``VALIDATION_TENSOR``: their validation reports."""
        parts, params, material = self._unmasked_parts()
        segment = np.asarray(parts[tensor], dtype=np.uint64)
        found = decode_evaluation(segment, self.num_bins, params, len(material.survivors))
        if found is None and int(segment[2 * self.num_bins]) != 0:
            log.warning(
                "masked_evaluation_ignored",
                round_index=self._round,
                segment=tensor,
                detail="the summed evaluation segments are impossible for the round's "
                "survivors (a hospital sent a malformed segment); the round's metrics leave "
                "them out",
            )
        return found

    def weighted_mean(self) -> Weights:
        """Global model plus the survivors' weighted mean delta (what the sum reveals)."""
        parts, params, material = self._unmasked_parts()
        segments = (EVALUATION_TENSOR, VALIDATION_TENSOR)
        model = {name: part for name, part in parts.items() if name not in segments}
        weight = sum(material.survivors.values())
        mean_delta = dequantise(masking.flatten_u64(model), params) / float(weight)
        specs = {n: TensorSpec("float64", s.shape) for n, s in specs_of(self._global).items()}
        return masking.unflatten(masking.flatten(self._global) + mean_delta, specs)

    def finish(self) -> Weights:
        mean = self.weighted_mean()
        weight = sum(self._material.survivors.values()) if self._material else 0
        self.inner.begin_round(self._round, self._global)
        self.inner.add(mean, weight)
        return self.inner.finish()

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


# ---- the round phase -----------------------------------------------------------------------


class SecAggServer:
    """The two secure aggregation steps of a training round, driven by ``RoundLoop``."""

    def __init__(
        self,
        exchange: Exchange,
        config: FederationConfig,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.exchange = exchange
        self.config = config
        self.settings = config.privacy.secagg
        self.clock = clock
        self.sleep = sleep
        self.aggregator: SecAggAggregator | None = None
        self.roster: SecAggRoster | None = None
        self.setup: SecAggSetup | None = None
        self._adverts: dict[SiteId, SecAggAdvert] = {}
        self._refusals: dict[SiteId, UpdateRejectedError] = {}
        self.refused: dict[SiteId, UpdateRejectedError] = {}
        """Invited sites left out of the round because their advert was refused, and why:
        the round loop records each as a rejection, so the site's masked update is never
        read and its reason reaches result.json and the ledger."""
        self._last_save = 0.0

    def wrap(self, aggregator: ServerAggregator) -> SecAggAggregator:
        self.aggregator = SecAggAggregator(aggregator, self.config.evaluation.histogram_bins)
        return self.aggregator

    def masked_evaluation(self) -> MaskedEvaluationSum | None:
        """The evaluations this training round's survivors added to the masked sum."""
        return None if self.aggregator is None else self.aggregator.masked_evaluation()

    def masked_validation(self) -> MaskedEvaluationSum | None:
        """The validation reports this training round's survivors added to the masked sum."""
        if self.aggregator is None:
            return None
        return self.aggregator.masked_evaluation(VALIDATION_TENSOR)

    # -- helpers --

    def _keep_alive(self, state: FederationState, save: Save) -> FederationState:
        if self.clock() - self._last_save > self.config.round.lease_s / 3:
            state = save(state)
            self._last_save = self.clock()
        return state

    def _fail(self, state: FederationState, save: Save, message: str) -> RoundFailedError:
        log.error("secagg_round_failed", round_index=state.round_index, detail=message)
        save(state.model_copy(update={"phase": "failed", "message": message}))
        return RoundFailedError(message)

    def _below_threshold(
        self, state: FederationState, save: Save, threshold: int, heard: str, advice: str
    ) -> RoundFailedError:
        """Fewer than ``threshold`` hospitals took a step: the round fails (``_fail``)."""
        return self._fail(
            state,
            save,
            f"round {state.round_index}: {heard}, fewer than the secure aggregation threshold "
            f"t={threshold}; {advice}",
        )

    def _key(self, round_index: int, document: str) -> str:
        return self.exchange.layout.secagg_global_key(round_index, document)

    # -- step 1: roster and setup --

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
            size = self.exchange.update_manifest_size(round_index, site_id)
            if size > self.config.admission.max_manifest_bytes:
                return False  # admission names it too_large if it is ever read
            answer = UpdateManifest.model_validate_json(
                self.exchange.read_update_manifest_bytes(round_index, site_id)
            )
        except (ExchangeError, ValidationError):
            return False
        return answer.declined is not None and (answer.site_id, answer.round_index) == (
            site_id,
            round_index,
        )

    def open_round(
        self,
        state: FederationState,
        manifest: GlobalManifest,
        context: AdmissionContext,
        save: Save,
    ) -> AdmissionContext:
        """Roster, adverts, setup; returns the admission context for masked updates."""
        r = manifest.round_index
        roster = transport.read(self.exchange, self._key(r, "roster"), SecAggRoster)
        if roster is None:
            roster = self.build_roster(manifest)
            transport.put_once(self.exchange, self._key(r, "roster"), roster)
            log.info("secagg_roster_published", round_index=r, threshold=roster.threshold)
        setup = transport.read(self.exchange, self._key(r, "setup"), SecAggSetup)
        sites = [entry.site_id for entry in roster.sites]
        self._refusals = {}
        declined: set[SiteId] = set()
        if setup is None:
            wait_s = min(self.settings.advert_timeout_s, self.config.round.deadline_s)
            give_up = self.clock() + wait_s
            while True:
                self._adverts = {
                    s: a for s in sites if (a := self._valid_advert(s, roster)) is not None
                }
                declined = {s for s in sites if s not in self._adverts and self._declined(s, r)}
                # a refused advert or a declined round is final
                heard = len(self._adverts.keys() | self._refusals.keys() | declined)
                if heard == len(sites) or self.clock() >= give_up:
                    break
                state = self._keep_alive(state, save)
                self.sleep(self.config.round.poll_interval_s)
            if len(self._adverts) < roster.threshold:
                raise self._below_threshold(
                    state,
                    save,
                    roster.threshold,
                    f"only {len(self._adverts)} of {len(sites)} hospitals sent their secure "
                    f"aggregation keys in {wait_s:.0f} s",
                    "check the hospitals that did not",
                )
            setup = SecAggSetup(
                federation_id=roster.federation_id,
                round_index=r,
                roster_sha256=transport.digest(roster),
                participants={s: a.mask_public_key for s, a in sorted(self._adverts.items())},
            )
            transport.put_once(self.exchange, self._key(r, "setup"), setup)
            log.info("secagg_setup_published", round_index=r, participants=len(self._adverts))
        else:  # resumed: the roster's other sites are read again for why they were left out
            read = {s: self._valid_advert(s, roster) for s in sites}
            self._adverts = {s: a for s in setup.participants if (a := read.get(s)) is not None}
            declined = {s for s in sites if s not in setup.participants and self._declined(s, r)}
        self.refused = {s: e for s, e in self._refusals.items() if s not in setup.participants}
        self.roster, self.setup = roster, setup
        specs = {
            name: TensorSpec("uint64", spec.shape) for name, spec in context.tensor_specs.items()
        }
        specs[EVALUATION_TENSOR] = segment_spec(self.config.evaluation.histogram_bins)
        specs[VALIDATION_TENSOR] = segment_spec(self.config.evaluation.histogram_bins)
        return dataclasses.replace(
            context,
            tensor_specs=specs,
            field_bits=roster.modulus_bits,
            invited_sites=frozenset(setup.participants) | declined,  # declines are answers
        )

    # -- step 2: unmask --

    def _request(self, state: FederationState, save: Save) -> SecAggUnmaskRequest:
        assert self.roster is not None and self.setup is not None
        r = state.round_index
        found = transport.read(self.exchange, self._key(r, "unmask"), SecAggUnmaskRequest)
        if found is not None:
            return found
        participants = set(self.setup.participants)
        accepted = {s for s, d in state.decisions.items() if d.status == "accepted"}
        survivors = sorted(participants & accepted)
        dropped = sorted(participants - accepted)
        if len(survivors) < self.roster.threshold:
            raise self._below_threshold(
                state,
                save,
                self.roster.threshold,
                f"{len(survivors)} of {len(participants)} hospitals delivered a masked update "
                f"({len(dropped)} dropped)",
                "the sum cannot be unmasked. Check the dropped hospitals, or lower "
                "privacy.secagg.threshold (it must stay above half)",
            )
        request = SecAggUnmaskRequest(
            federation_id=self.roster.federation_id,
            round_index=r,
            setup_sha256=transport.digest(self.setup),
            survivors=survivors,
            dropped=dropped,
            relayed={
                recipient: {
                    sender: advert.shares[recipient] for sender, advert in self._adverts.items()
                }
                for recipient in survivors
            },
        )
        transport.put_once(self.exchange, self._key(r, "unmask"), request)
        log.info(
            "secagg_unmask_requested", round_index=r, survivors=len(survivors), dropped=len(dropped)
        )
        return request

    def _answers(
        self, state: FederationState, save: Save, request: SecAggUnmaskRequest
    ) -> tuple[FederationState, dict[SiteId, SecAggUnmaskAnswer]]:
        r = state.round_index
        digest = transport.digest(request)
        give_up = self.clock() + self.settings.unmask_timeout_s
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
            if len(answers) == len(request.survivors) or self.clock() >= give_up:
                return state, answers
            state = self._keep_alive(state, save)
            self.sleep(self.config.round.poll_interval_s)

    def _reconstruct(
        self, request: SecAggUnmaskRequest, answers: dict[SiteId, SecAggUnmaskAnswer]
    ) -> tuple[UnmaskMaterial, list[str]]:
        """Secrets from ``t`` shares each; a secret that fails its commitment is a problem."""
        assert self.roster is not None and self.setup is not None
        roster, setup = self.roster, self.setup
        fed, r, t = roster.federation_id, roster.round_index, roster.threshold
        problems: list[str] = []

        def shares_of(
            site: SiteId, pick: Callable[[SecAggUnmaskAnswer], dict[str, str]]
        ) -> list[shamir.Share]:
            found = []
            for holder, answer in sorted(answers.items()):
                if site not in pick(answer):
                    continue
                try:  # a share outside the field is the holder's fault, not the round's
                    share = bytes.fromhex(pick(answer)[site])
                    found.append(shamir.Share.from_bytes(roster.x_of(holder), share))
                except ValueError as err:
                    log.warning(
                        "secagg_share_rejected", holder=holder, site_id=site, detail=str(err)
                    )
            return found

        self_seeds = []
        for site in request.survivors:
            b_u = reconstruct_checked(
                shares_of(site, lambda a: a.self_mask_shares),
                t,
                masking.seed_commitment,
                self._adverts[site].self_seed_sha256,
            )
            if b_u is None:
                problems.append(f"{site}: no {t} self-mask shares match its commitment")
                continue
            self_seeds.append(masking.self_mask_seed(b_u, fed, r, site))
        dropped_pairs = []
        for site in request.dropped:
            raw = reconstruct_checked(
                shares_of(site, lambda a: a.mask_key_shares),
                t,
                lambda secret: masking.public_bytes(masking.load_private(secret)).hex(),
                setup.participants[site],
            )
            if raw is None:
                problems.append(f"{site}: no {t} mask-key shares match its advertised key")
                continue
            key = masking.load_private(raw)
            for survivor in request.survivors:
                public = bytes.fromhex(setup.participants[survivor])
                seed = masking.pair_seed(key, public, fed, r, site, survivor)
                dropped_pairs.append((survivor, site, seed))
        assert self.aggregator is not None
        survivors = {s: self.aggregator.summed_sites.get(s, 0) for s in request.survivors}
        return UnmaskMaterial(survivors, self_seeds, dropped_pairs), problems

    def unmask(
        self,
        state: FederationState,
        save: Save,
    ) -> FederationState:
        """Request, answers, reconstruction; leaves the aggregator ready to ``finish``."""
        if self.aggregator is None or self.roster is None:
            raise AggregationError("unmask() before open_round()")
        r = state.round_index
        request = self._request(state, save)
        late = {
            s: d for s, d in state.decisions.items()
            if d.status == "accepted" and s not in request.survivors
        }  # fmt: skip
        if late:  # admitted after the request was published (only on a resume): not counted
            decisions = dict(state.decisions)
            for site_id, decision in late.items():
                decisions[site_id] = decision.model_copy(
                    update={
                        "status": "rejected",
                        "reason": "secagg_late",
                        "detail": "arrived after the secure aggregation unmask request",
                    }
                )
            state = save(state.model_copy(update={"decisions": decisions}))
        if set(self.aggregator.summed_sites) != set(request.survivors):
            survivors = [state.decisions[s] for s in request.survivors]
            self.aggregator.resum(lambda: [verified_update(self.exchange, r, d) for d in survivors])
        state, answers = self._answers(state, save, request)
        if len(answers) < self.roster.threshold:
            raise self._below_threshold(
                state,
                save,
                self.roster.threshold,
                f"{len(answers)} of {len(request.survivors)} surviving hospitals answered the "
                f"unmask request in {self.settings.unmask_timeout_s:.0f} s",
                "the sum cannot be unmasked",
            )
        material, problems = self._reconstruct(request, answers)
        if problems:
            raise self._fail(
                state,
                save,
                f"round {r}: secure aggregation could not unmask: {'; '.join(problems[:5])}",
            )
        self.aggregator.set_unmask(
            FieldParams(self.roster.modulus_bits, self.roster.fractional_bits, self.roster.clip),
            material,
        )
        log.info(
            "secagg_unmasked", round_index=r, answers=len(answers), dropped=len(request.dropped)
        )
        return state


def reconstruct_checked(
    shares: Sequence[shamir.Share],
    threshold: int,
    fingerprint: Callable[[bytes], str],
    expected: str,
    max_tries: int = 256,
) -> bytes | None:
    """A 32-byte secret from ``threshold`` of ``shares`` whose ``fingerprint`` is the one its
    owner advertised (seed commitment, or public key); other subsets are tried when a wrong
    share spoils the first, so one faulty hospital among more than ``t`` answers does not
    fail the round."""
    for subset in itertools.islice(itertools.combinations(shares, threshold), max_tries):
        secret = shamir.reconstruct(subset, threshold)
        if secret >> 256:
            continue  # not a 32-byte secret: a wrong share is in this subset
        candidate = shamir.secret_to_bytes(secret, 32)
        if fingerprint(candidate) == expected:
            return candidate
    return None


def verified_update(exchange: Exchange, round_index: int, decision: Decision) -> AdmittedUpdate:
    """An admitted update re-read from the exchange, checked against its decision."""
    data = exchange.read_update_weights(round_index, decision.site_id)
    if sha256_hex(data) != decision.sha256:
        raise ExchangeError(
            f"admitted update of site {decision.site_id} round {round_index} changed after "
            "admission; the exchange was altered"
        )
    return AdmittedUpdate(decision.site_id, decision.num_examples, data, view_weights(data))

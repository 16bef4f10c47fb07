"""The hospital's side of secure aggregation: advertise, mask, answer the unmask request.

A hospital never sends its update in the clear: it sends ``y_u`` (``fl_core.secagg.masking``)
and, before training, Shamir shares of its self-mask seed and of its round mask key,
encrypted for each peer with a key derived from the two long-term X25519 keys. After the
round closes it answers the aggregator's single, write-once unmask request with the shares
it holds: of ``b_u`` for surviving sites, of the mask key for dropped sites, never both for
one site. It refuses a request that breaks that rule, that is not built on the setup it
masked against, that leaves fewer than ``t`` survivors, or that differs from one it already
answered.

One process may host several hospitals (``serve_sites``): every phase runs for all of them
before the next phase waits on the aggregator, so no hosted hospital waits on another.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pydantic import BaseModel

from fl_core.config import FederationConfig
from fl_core.errors import (
    AccessDeniedError,
    ExchangeError,
    ObjectExistsError,
    SecAggRefusedError,
)
from fl_core.exchange.histograms import class_histogram
from fl_core.exchange.manifests import EvaluationReport, GlobalManifest
from fl_core.exchange.protocol import Exchange
from fl_core.secagg import masking, shamir, transport
from fl_core.secagg.field import FieldParams, fractional_bits_for, quantise
from fl_core.secagg.masked_evaluation import (
    EVALUATION_TENSOR,
    VALIDATION_TENSOR,
    encode_evaluation,
)
from fl_core.secagg.messages import (
    EncryptedShares,
    SecAggAdvert,
    SecAggRoster,
    SecAggSetup,
    SecAggUnmaskAnswer,
    SecAggUnmaskRequest,
)
from fl_core.secagg.threshold import honest_majority
from fl_core.serialisation import decode_weights, specs_of
from fl_core.types import SiteId, Weights

log = structlog.get_logger("fedsilo.client.secagg")

SEED_BYTES = 32


@dataclass(frozen=True)
class RoundSecrets:
    """What a hospital keeps between advertising and masking (memory only: a hospital that
    restarts mid-round cannot mask, is dropped, and its peers' masks are still removed)."""

    site_id: SiteId
    roster: SecAggRoster
    roster_sha256: str
    mask_key: X25519PrivateKey
    self_seed: bytes


def field_of(roster: SecAggRoster) -> FieldParams:
    return FieldParams(roster.modulus_bits, roster.fractional_bits, roster.clip)


# ---- checks -----------------------------------------------------------------------------


def check_roster(
    roster: SecAggRoster,
    site_id: SiteId,
    long_term_key: X25519PrivateKey,
    manifest: GlobalManifest,
    config: FederationConfig,
) -> None:
    """Refuse a roster that does not match the round, our key, or the agreed parameters."""
    where = f"secagg roster of round {manifest.round_index}"
    if (roster.federation_id, roster.round_index, roster.global_sha256) != (
        manifest.federation_id,
        manifest.round_index,
        manifest.sha256,
    ):
        raise SecAggRefusedError(f"{where} is for another round or global model")
    if [entry.site_id for entry in roster.sites] != sorted(manifest.invited_sites):
        raise SecAggRefusedError(f"{where} lists other sites than the round invites")
    if site_id not in {entry.site_id for entry in roster.sites}:
        raise SecAggRefusedError(f"{where} does not list site {site_id}")
    if roster.public_key(site_id) != masking.public_bytes(long_term_key):
        raise SecAggRefusedError(
            f"{where} holds another public key for site {site_id} than this hospital's; "
            "check its registration (`fedsilo onboard`)"
        )
    cfg = config.privacy.secagg
    if roster.threshold < honest_majority(len(roster.sites)):
        raise SecAggRefusedError(
            f"{where} asks for threshold {roster.threshold} < {honest_majority(len(roster.sites))}"
            f" of {len(roster.sites)} sites: a minority could unmask a hospital"
        )
    expected_bits = fractional_bits_for(
        cfg.modulus_bits, cfg.clip, config.admission.max_num_examples, len(roster.sites)
    )
    if (roster.modulus_bits, roster.clip, roster.fractional_bits, roster.max_weight) != (
        cfg.modulus_bits,
        cfg.clip,
        expected_bits,
        config.admission.max_num_examples,
    ):
        raise SecAggRefusedError(f"{where} uses other field parameters than privacy.secagg")


def check_setup(setup: SecAggSetup, own: RoundSecrets) -> None:
    roster = own.roster
    where = f"secagg setup of round {roster.round_index}"
    if setup.roster_sha256 != own.roster_sha256 or setup.round_index != roster.round_index:
        raise SecAggRefusedError(f"{where} is not built on the roster this hospital advertised to")
    if setup.participants.get(own.site_id) != masking.public_bytes(own.mask_key).hex():
        raise SecAggRefusedError(f"{where} lists another mask key for site {own.site_id}")
    if not set(setup.participants) <= {entry.site_id for entry in roster.sites}:
        raise SecAggRefusedError(f"{where} names sites outside the roster")
    if len(setup.participants) < roster.threshold:
        raise SecAggRefusedError(
            f"{where} has {len(setup.participants)} participants, fewer than threshold "
            f"{roster.threshold}: the round cannot be unmasked safely"
        )


def check_request(
    request: SecAggUnmaskRequest, setup: SecAggSetup, roster: SecAggRoster, site_id: SiteId
) -> None:
    """Bonawitz's consistency rule, made structural by the write-once request."""
    where = f"secagg unmask request of round {roster.round_index}"
    survivors, dropped = set(request.survivors), set(request.dropped)
    if request.setup_sha256 != transport.digest(setup):
        raise SecAggRefusedError(f"{where} is not built on the round's setup")
    both = survivors & dropped
    if both:
        raise SecAggRefusedError(
            f"{where} lists {sorted(both)} as both surviving and dropped: answering would "
            "reveal both secrets of a site and unmask its update; refused"
        )
    if survivors | dropped != set(setup.participants):
        raise SecAggRefusedError(f"{where}: survivors and dropped are not the participants")
    if len(survivors) < roster.threshold:
        raise SecAggRefusedError(
            f"{where} has {len(survivors)} survivors, fewer than threshold {roster.threshold}"
        )
    if site_id not in survivors:
        raise SecAggRefusedError(f"{where} does not count site {site_id} as a survivor")


# ---- the three steps ----------------------------------------------------------------------


def build_advert(
    site_id: SiteId, long_term_key: X25519PrivateKey, roster: SecAggRoster
) -> tuple[SecAggAdvert, RoundSecrets]:
    """Fresh mask key and self-mask seed, and their shares encrypted for every roster site."""
    mask_key = masking.new_private_key()
    self_seed = secrets.token_bytes(SEED_BYTES)
    xs = [roster.x_of(entry.site_id) for entry in roster.sites]
    seed_shares = shamir.split(shamir.secret_from_bytes(self_seed), roster.threshold, xs)
    key_shares = shamir.split(
        shamir.secret_from_bytes(masking.private_bytes(mask_key)), roster.threshold, xs
    )
    encrypted = {}
    for entry, seed_share, key_share in zip(roster.sites, seed_shares, key_shares, strict=True):
        nonce = secrets.token_bytes(masking.NONCE_BYTES)
        cipher, associated = masking.share_cipher(
            long_term_key,
            bytes.fromhex(entry.public_key),
            roster.federation_id,
            roster.round_index,
            site_id,
            entry.site_id,
        )
        plain = seed_share.to_bytes() + key_share.to_bytes()
        ciphertext = cipher.encrypt(nonce, plain, associated)
        encrypted[entry.site_id] = EncryptedShares(nonce=nonce.hex(), ciphertext=ciphertext.hex())
    roster_sha256 = transport.digest(roster)
    advert = SecAggAdvert(
        federation_id=roster.federation_id,
        site_id=site_id,
        round_index=roster.round_index,
        roster_sha256=roster_sha256,
        mask_public_key=masking.public_bytes(mask_key).hex(),
        self_seed_sha256=masking.seed_commitment(self_seed),
        shares=encrypted,
    )
    return advert, RoundSecrets(site_id, roster, roster_sha256, mask_key, self_seed)


def masked_weights(
    own: RoundSecrets,
    setup: SecAggSetup,
    global_weights: Weights,
    trained_weights: Weights,
    num_examples: int,
    num_bins: int,
    evaluation: EvaluationReport | None = None,
    validation: EvaluationReport | None = None,
) -> Weights:
    """``y_u`` as uint64 tensors named and shaped like the global model, plus the evaluation
    segment (``fl_core.secagg.masked_evaluation``): ``evaluation`` is the report the disclosure
    floor kept out of the clear, None when the hospital adds no evaluation to the sum;
    ``validation`` the same for the validation split, in a segment of its own."""
    roster = own.roster
    if num_examples > roster.max_weight:
        raise SecAggRefusedError(
            f"site {own.site_id} has {num_examples} examples, more than the {roster.max_weight} "
            "the field was sized for; raise admission.max_num_examples"
        )
    params = field_of(roster)
    delta = masking.flatten(trained_weights) - masking.flatten(global_weights)
    clipped = int(np.count_nonzero(np.abs(delta) > params.clip))
    if clipped:
        log.warning("secagg_delta_clipped", site_id=own.site_id, coordinates=clipped)
    pair_seeds = {
        peer: masking.pair_seed(
            own.mask_key,
            bytes.fromhex(public),
            roster.federation_id,
            roster.round_index,
            own.site_id,
            peer,
        )
        for peer, public in setup.participants.items()
        if peer != own.site_id
    }
    self_seed = masking.self_mask_seed(
        own.self_seed, roster.federation_id, roster.round_index, own.site_id
    )
    parts = masking.unflatten(quantise(delta, num_examples, params), specs_of(global_weights))
    for name, report in ((EVALUATION_TENSOR, evaluation), (VALIDATION_TENSOR, validation)):
        parts[name] = encode_evaluation(
            None if report is None else class_histogram(report.histogram),
            0.0 if report is None else report.loss_sum,
            num_bins,
            params,
            len(roster.sites),
        )
    masked = masking.mask_update(
        masking.flatten_u64(parts), own.site_id, self_seed, pair_seeds, params
    )
    return masking.unflatten(masked, specs_of(parts))


def build_answer(
    request: SecAggUnmaskRequest,
    setup: SecAggSetup,
    roster: SecAggRoster,
    site_id: SiteId,
    long_term_key: X25519PrivateKey,
) -> SecAggUnmaskAnswer:
    """Decrypt the shares relayed to us; reveal per site only the secret the request allows."""
    check_request(request, setup, roster, site_id)
    survivors, dropped = set(request.survivors), set(request.dropped)
    seed_shares: dict[str, str] = {}
    key_shares: dict[str, str] = {}
    for sender, encrypted in sorted(request.relayed.get(site_id, {}).items()):
        if sender not in setup.participants:
            raise SecAggRefusedError(f"unmask request relays shares from non-participant {sender}")
        try:
            cipher, associated = masking.share_cipher(
                long_term_key,
                roster.public_key(sender),
                roster.federation_id,
                roster.round_index,
                sender,
                site_id,
            )
            ciphertext = bytes.fromhex(encrypted.ciphertext)
            plain = cipher.decrypt(bytes.fromhex(encrypted.nonce), ciphertext, associated)
        except (InvalidTag, KeyError, ValueError):
            log.warning("secagg_share_undecryptable", sender=sender, site_id=site_id)
            continue
        seed_part, key_part = plain[: shamir.SHARE_BYTES], plain[shamir.SHARE_BYTES :]
        if sender in survivors:
            seed_shares[sender] = seed_part.hex()
        elif sender in dropped:
            key_shares[sender] = key_part.hex()
    return SecAggUnmaskAnswer(
        federation_id=roster.federation_id,
        site_id=site_id,
        round_index=roster.round_index,
        request_sha256=transport.digest(request),
        self_mask_shares=seed_shares,
        mask_key_shares=key_shares,
    )


# ---- serving a round ----------------------------------------------------------------------


class SecAggHospital(Protocol):
    @property
    def site_id(self) -> SiteId: ...

    secagg_key: bytes | None


Mask = Callable[[Weights, int, EvaluationReport | None, EvaluationReport | None], Weights]
"""Masks a trained model of ``num_examples`` rows, with the evaluation and the validation
report to add to the sum."""
H = TypeVar("H", bound=SecAggHospital)


def _round_moved_on(exchange: Exchange, round_index: int) -> bool:
    try:
        return exchange.read_global_manifest(round_index + 1) is not None
    except AccessDeniedError:
        return False  # S3's answer to a hospital for a key not written yet


_Doc = TypeVar("_Doc", bound=BaseModel)


def _wait_for(
    exchange: Exchange,
    round_index: int,
    document: str,
    model: type[_Doc],
    timeout_s: float,
    poll_interval_s: float,
) -> _Doc | None:
    """Poll for a relayed ``global.secagg-*`` document; None when the round moved on."""
    key = exchange.layout.secagg_global_key(round_index, document)
    give_up = time.monotonic() + timeout_s
    interval = poll_interval_s
    while True:
        found = transport.read(exchange, key, model)
        if found is not None:
            return found
        if _round_moved_on(exchange, round_index):
            return None  # the aggregator closed the round without us
        if time.monotonic() > give_up:
            raise ExchangeError(
                f"no secagg {document} for round {round_index} after {timeout_s:.0f} s in "
                f"{exchange.describe()}; is the aggregator running?"
            )
        time.sleep(interval)
        interval = min(interval * 1.5, max(poll_interval_s, 1.0))


def long_term_key_of(hospital: SecAggHospital) -> X25519PrivateKey:
    if hospital.secagg_key is None:
        raise SecAggRefusedError(
            f"site {hospital.site_id} has no secure aggregation key; give the hospital its "
            "key file (made by `fedsilo onboard request`) or turn privacy.secagg off"
        )
    return masking.load_private(hospital.secagg_key)


def serve_secagg_round(
    exchange: Exchange,
    hospitals: Sequence[H],
    manifest: GlobalManifest,
    config: FederationConfig,
    timeout_s: float,
    answer_round: Callable[[H, Mask | None], bool],
) -> None:
    """One training round under secure aggregation for every hosted hospital."""
    layout, r = exchange.layout, manifest.round_index
    poll = config.round.poll_interval_s
    hosted = [h for h in hospitals if h.site_id in manifest.invited_sites]
    if not hosted:
        return
    roster = _wait_for(exchange, r, "roster", SecAggRoster, timeout_s, poll)
    if roster is None:
        return
    own: dict[SiteId, RoundSecrets] = {}
    advertised: set[SiteId] = set()  # may answer the unmask request (secrets or not)
    keys = {h.site_id: long_term_key_of(h) for h in hosted}
    for hospital in hosted:  # 1. advertise for every hosted site before waiting on anyone
        site_id = hospital.site_id
        try:
            check_roster(roster, site_id, keys[site_id], manifest, config)
            advert, secrets_ = build_advert(site_id, keys[site_id], roster)
            exchange.store.put_new(
                layout.secagg_update_key(r, site_id, "advert"), transport.dump(advert)
            )
        except SecAggRefusedError as refused:
            log.error("secagg_refused", site_id=site_id, round_index=r, detail=str(refused))
            continue
        except ObjectExistsError:
            # advertised before a restart: its round secrets are gone, so it cannot mask now,
            # but an update it sent before the restart still counts and it can still answer
            log.info("secagg_advert_already_written", site_id=site_id, round_index=r)
            advertised.add(site_id)
            continue
        own[site_id] = secrets_
        advertised.add(site_id)
    if not advertised:
        return
    setup = _wait_for(exchange, r, "setup", SecAggSetup, timeout_s, poll)
    if setup is None:
        return
    global_weights = decode_weights(exchange.read_global_weights(manifest))
    num_bins = config.evaluation.histogram_bins
    for hospital in hosted:  # 2. train and send the masked update
        held = own.get(hospital.site_id)
        if held is None or hospital.site_id not in setup.participants:
            continue
        try:
            check_setup(setup, held)
        except SecAggRefusedError as refused:
            log.error(
                "secagg_refused", site_id=hospital.site_id, round_index=r, detail=str(refused)
            )
            continue

        def mask(
            trained: Weights,
            num_examples: int,
            evaluation: EvaluationReport | None,
            validation: EvaluationReport | None,
            s: RoundSecrets = held,
        ) -> Weights:
            return masked_weights(
                s, setup, global_weights, trained, num_examples, num_bins, evaluation, validation
            )

        answer_round(hospital, mask)
    request = _wait_for(exchange, r, "unmask", SecAggUnmaskRequest, timeout_s, poll)
    if request is None:
        return
    for hospital in hosted:  # 3. answer the unmask request
        site_id = hospital.site_id
        if site_id in request.survivors and site_id in advertised:
            answer_unmask(exchange, request, setup, roster, site_id, keys[site_id])


def answer_unmask(
    exchange: Exchange,
    request: SecAggUnmaskRequest,
    setup: SecAggSetup,
    roster: SecAggRoster,
    site_id: SiteId,
    long_term_key: X25519PrivateKey,
) -> SecAggUnmaskAnswer | None:
    """Write our answer once; None when refused or already answered (that same request)."""
    key = exchange.layout.secagg_update_key(roster.round_index, site_id, "answer")
    previous = transport.read(exchange, key, SecAggUnmaskAnswer)
    if previous is not None:
        if previous.request_sha256 != transport.digest(request):
            log.error(
                "secagg_refused",
                site_id=site_id,
                round_index=roster.round_index,
                detail="the unmask request changed after this hospital answered it",
            )
        return None
    try:
        answer = build_answer(request, setup, roster, site_id, long_term_key)
    except SecAggRefusedError as refused:
        log.error(
            "secagg_refused", site_id=site_id, round_index=roster.round_index, detail=str(refused)
        )
        return None
    try:
        exchange.store.put_new(key, transport.dump(answer))
    except ObjectExistsError:
        return None
    log.info("secagg_answered", site_id=site_id, round_index=roster.round_index)
    return answer

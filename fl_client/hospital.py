"""The hospital loop: poll for the global model, verify it, train, write the update once.

A hospital reads only ``rounds/*/global.*`` and writes only its own update keys (the IAM rule
of docs/design.md), so it learns about rounds by trying the next round's manifest, never by
listing. One process may host several hospitals in turn (``serve_sites``), so a federation of
hundreds of hospitals does not need hundreds of processes each loading torch.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

import structlog

from fl_client.disclosure import finish_answer, refuse_below_floor
from fl_client.local_round import begin_local_round
from fl_client.moments import publish_moments
from fl_client.personalise import personalised_evaluation
from fl_client.privacy_budget import private_training, refuse_over_budget, trainer_privacy
from fl_client.private import HospitalPrivacy
from fl_client.receipts import keep_receipt
from fl_client.scaffold_state import ControlVariate
from fl_client.secagg_client import Mask, serve_secagg_round
from fl_client.site_policy_gate import SiteGate
from fl_client.trainer import ClientTrainer, derive_seed
from fl_core.admission import update_metadata
from fl_core.config import FederationConfig
from fl_core.control_variates import split_controls
from fl_core.data.base import SiteData
from fl_core.disclosure import DisclosureFloor
from fl_core.errors import AccessDeniedError, ExchangeError, ObjectExistsError
from fl_core.exchange.manifests import EvaluationReport, GlobalManifest, UpdateManifest
from fl_core.exchange.protocol import Exchange
from fl_core.serialisation import decode_weights, encode_weights
from fl_core.types import Weights

log = structlog.get_logger("fedsilo.client")


@dataclass
class Hospital:
    """One site's data and the trainer that serves it (a trainer may serve several sites)."""

    data: SiteData
    trainer: ClientTrainer
    state_dir: Path | None = None
    """The hospital's own local state folder (kept across restarts); None: memory only."""
    secagg_key: bytes | None = field(default=None, repr=False)
    """Raw long-term X25519 private key for secure aggregation (its public half is registered)."""
    disclosure_floor: DisclosureFloor | None = None
    """The site policy's floor on what leaves in the clear (``fl_client.disclosure``)."""
    control_variate: ControlVariate = field(init=False, repr=False)
    privacy: HospitalPrivacy | None = field(default=None, init=False, repr=False)  # DP-SGD
    site_gate: SiteGate | None = field(default=None, repr=False)
    """The hospital's site policy, checked on every round (``fl_client.site_policy_gate``)."""

    def __post_init__(self) -> None:
        self.control_variate = ControlVariate(self.data.site_id, self.state_dir)

    @property
    def site_id(self) -> str:
        return self.data.site_id


def attach_privacy(hospital: Hospital, config: FederationConfig) -> None:
    """At client start: check this hospital's DP-SGD settings and restore its accountant."""
    if hospital.privacy is None:
        rows = hospital.data.train.num_examples
        hospital.privacy = trainer_privacy(
            hospital.trainer, config, hospital.site_id, rows, hospital.state_dir
        )


@dataclass(frozen=True)
class GlobalModel:
    """A round's global model, read, verified and decoded once for every site a process hosts.

    Its arrays are read-only: every hosted site starts from them, so a site that changed one
    in place would change its neighbours' round; numpy raises instead.
    """

    manifest: GlobalManifest
    weights: Weights
    controls: Weights

    @classmethod
    def read(cls, exchange: Exchange, manifest: GlobalManifest) -> GlobalModel:
        weights, controls = split_controls(decode_weights(exchange.read_global_weights(manifest)))
        for array in (*weights.values(), *controls.values()):
            array.setflags(write=False)
        return cls(manifest, weights, controls)


def declined_by_policy(
    exchange: Exchange, hospital: Hospital, manifest: GlobalManifest, model: GlobalModel
) -> bool:
    """The hospital's site policy declines the round; its decline is then the answer."""
    gate = hospital.site_gate
    if gate is None or hospital.site_id not in manifest.invited_sites:
        return False
    received = {**model.weights, **model.controls}  # the architecture it actually received
    privacy, rows = hospital.privacy, hospital.data.train.num_examples
    return gate.declines(exchange, manifest, hospital.site_id, received, privacy, rows)


def validation_report(
    trainer: ClientTrainer, data: SiteData, num_bins: int
) -> EvaluationReport | None:
    """The model on the validation split (what early stopping and the recalibration sum);
    None without validation rows. No reference scores: nothing is compared on it."""
    if data.valid.num_examples == 0:
        return None
    scored = trainer.evaluate(data.valid, num_bins)
    return EvaluationReport(
        num_examples=scored.num_examples, loss_sum=scored.loss_sum, histogram=scored.histogram
    )


def answer_round(
    exchange: Exchange,
    hospital: Hospital,
    manifest: GlobalManifest,
    config: FederationConfig,
    mask: Mask | None = None,
    global_model: GlobalModel | None = None,
) -> bool:
    """Evaluate the global model, train on it if asked, and write the answer once.

    ``global_model``: the round's model already read for another hosted site, if any.
    Returns False when the site is not invited or already answered this round.
    """
    site_id = hospital.site_id
    if site_id not in manifest.invited_sites:
        return False
    if global_model is None or global_model.manifest.sha256 != manifest.sha256:
        global_model = GlobalModel.read(exchange, manifest)
    if declined_by_policy(exchange, hospital, manifest, global_model):
        return True  # the decline is the answer: nothing was computed on the data
    gate = hospital.site_gate
    trainer = hospital.trainer
    trainer.set_weights(global_model.weights)
    evaluation = trainer.evaluate(hospital.data.test, config.evaluation.histogram_bins)
    if manifest.final:
        evaluation = personalised_evaluation(
            trainer, hospital.data, config, manifest.round_index, evaluation
        )
    update = UpdateManifest(
        federation_id=manifest.federation_id,
        site_id=site_id,
        round_index=manifest.round_index,
        task="evaluate",
        global_sha256=manifest.sha256,
        num_examples=hospital.data.train.num_examples,
        nonce=secrets.token_hex(16),
        evaluation=evaluation,
        validation=validation_report(trainer, hospital.data, config.evaluation.histogram_bins),
    )
    outgoing: Weights | None = None
    local = None
    declined = refuse_over_budget(hospital.privacy, update) if manifest.task == "train" else None
    if declined is None and manifest.task == "train":
        declined = refuse_below_floor(update, hospital.data, hospital.disclosure_floor)
    if declined is not None:  # this round would exceed the hospital's privacy budget
        update = declined
    elif manifest.task == "train" and hospital.data.train.num_examples == 0:
        # nothing to learn from (a cross-validation fold that holds all its stays): an update
        # of zero rows would be refused every round; saying so is an answer, not a fault
        update = update.declined_as(
            "no_training_rows", f"site {site_id} has no training rows; it evaluates only"
        )
    elif manifest.task == "train":
        seed = derive_seed(config.seed, site_id, manifest.round_index)
        local = begin_local_round(
            trainer, config, site_id, manifest.round_index, global_model.weights,
            global_model.controls, hospital.control_variate,
        )  # fmt: skip
        with private_training(trainer, hospital.privacy, manifest.round_index):
            trained = trainer.train(hospital.data, manifest.round_index, seed)
        outgoing = local.outgoing(trainer.get_weights(), trained)
        update = update.trained(trained.num_examples, trained.train_loss)
    if hospital.privacy is not None:
        update = update.with_privacy(hospital.privacy.spent())
    # the disclosure floor; under secure aggregation y_u replaces the weights
    floor = hospital.disclosure_floor
    update, outgoing = finish_answer(update, outgoing, hospital.data, floor, mask)
    # a training answer is one object: the tensors, with the finished manifest inside
    weights = None if outgoing is None else encode_weights(outgoing, update_metadata(update))
    if gate and weights and (oversize := gate.oversize(update, len(weights))) is not None:
        update, weights, local = oversize, None, None  # over the site's max_update_bytes
    try:
        update_sha256 = exchange.write_update(update, weights)
    except ObjectExistsError:
        log.info("update_already_written", site_id=site_id, round_index=manifest.round_index)
        if local is not None:
            local.commit()  # written before a restart, from the same c_i and seed
        return False
    if local is not None:
        local.commit()
    if hospital.state_dir is not None:
        keep_receipt(exchange, hospital.state_dir, update, manifest, update_sha256)
    log.info(
        "update_written",
        site_id=site_id,
        round_index=manifest.round_index,
        task=manifest.task,
        num_examples=update.num_examples,
    )
    return True


def latest_round(exchange: Exchange, start: int = 1) -> int:
    """The newest published round at or after ``start`` (hospitals probe, they cannot list)."""
    round_index = start
    try:
        while exchange.read_global_manifest(round_index + 1) is not None:
            round_index += 1
    except AccessDeniedError:
        pass  # the next round is not published yet (S3 answers 403 when we may not list)
    return round_index


def wait_for_global(
    exchange: Exchange,
    round_index: int,
    poll_interval_s: float,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> GlobalManifest:
    give_up = clock() + timeout_s
    interval = poll_interval_s
    denied: AccessDeniedError | None = None
    while True:
        try:
            manifest = exchange.read_global_manifest(round_index)
        except AccessDeniedError as err:  # S3's answer for a key not written yet, to us
            manifest, denied = None, err
        if manifest is not None:
            return manifest
        if clock() > give_up:
            hint = (
                f" (the store refused access: {denied}; check this hospital's role)"
                if denied
                else "; is the aggregator running?"
            )
            raise ExchangeError(
                f"no global model for round {round_index} after {timeout_s:.0f} s in "
                f"{exchange.describe()}{hint}"
            )
        sleep(interval)
        cap = max(poll_interval_s, exchange.store.poll_backoff_cap_s)
        interval = min(interval * 1.5, cap)


class RoundNotifier(Protocol):
    """Wake-ups from and to an aggregator on the same machine (a simulation's worker).

    Only latency: the exchange remains the source of truth, and polling remains the fallback.
    """

    def wait_published(self, round_index: int, seconds: float) -> None:
        """Sleep up to ``seconds``, returning early once ``round_index`` is published."""

    def answered(self, round_index: int) -> None:
        """Every hosted site has answered ``round_index``."""


def serve_sites(
    exchange: Exchange,
    hospitals: Sequence[Hospital],
    config: FederationConfig,
    timeout_s: float,
    notifier: RoundNotifier | None = None,
) -> int:
    """Answer every round for every hosted site until the final round; returns rounds served."""
    for hospital in hospitals:  # DP-SGD settings checked (exit 2) and accountants restored
        attach_privacy(hospital, config)
    round_index = 1
    started = False
    try:
        if exchange.read_global_manifest(1) is not None:
            round_index = latest_round(exchange)
            started = True
    except AccessDeniedError:
        pass  # round 1 not published yet; wait_for_global polls for it
    if not started:
        # the aggregator builds the first model's standardisation from these reports
        for hospital in hospitals:  # not to a federation its site policy does not serve
            if hospital.site_gate is None or hospital.site_gate.serves(exchange.federation_id):
                publish_moments(exchange, hospital.data, hospital.disclosure_floor)
    served = 0
    while True:
        sleep = time.sleep if notifier is None else partial(notifier.wait_published, round_index)
        manifest = wait_for_global(
            exchange, round_index, config.round.poll_interval_s, timeout_s, sleep=sleep
        )
        invited = set(manifest.invited_sites)
        shared = (
            GlobalModel.read(exchange, manifest)
            if any(h.site_id in invited for h in hospitals)
            else None
        )
        if config.privacy.secagg.enabled and manifest.task == "train":

            def answer(
                h: Hospital,
                m: Mask | None,
                g: GlobalManifest = manifest,
                model: GlobalModel | None = shared,
            ) -> bool:
                return answer_round(exchange, h, g, config, m, model)

            # a hospital whose policy declines the round says so and never advertises a key
            willing = [
                h
                for h in hospitals
                if shared is None or not declined_by_policy(exchange, h, manifest, shared)
            ]
            serve_secagg_round(exchange, willing, manifest, config, timeout_s, answer)
        else:
            for hospital in hospitals:
                structlog.contextvars.bind_contextvars(site_id=hospital.site_id)
                answer_round(exchange, hospital, manifest, config, global_model=shared)
        structlog.contextvars.unbind_contextvars("site_id")
        if notifier is not None:
            notifier.answered(round_index)
        served += 1
        if manifest.final:
            return served
        round_index += 1

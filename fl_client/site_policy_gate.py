"""The site policy enforced on every round a hospital serves, failing closed.

Before anything is computed on the hospital's data the gate checks the round against the
hospital's policy (``fl_core.site_policy``), cheapest first: the federation is one it serves;
the round's config hash is approved; the published study hashes to that config hash (so the
study the hospital reads is the one it approved); the global model it received has an
approved architecture (computed from the tensors, not from a claim); the privacy protection
the policy requires is there; the study and the round stay within ``max_rounds``; and the
round's DP-SGD spend keeps the site's loss over all studies within ``epsilon_budget``
(``fl_client.privacy_ledger``). The finished answer is checked against ``max_update_bytes``.

A refusal is the round's answer: a manifest with ``declined="policy"``, the rule and a
detail, and no evaluation, loss or weights. The aggregator records it as a declined decision
(``policy <rule>``), so the federation sees who declined and why without learning anything
from the hospital's data.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from fl_client.privacy_ledger import PrivacyLedger
from fl_client.private import HospitalPrivacy
from fl_core.errors import ConfigError, ObjectExistsError
from fl_core.exchange.manifests import GlobalManifest, PolicyRule, Task, UpdateManifest
from fl_core.exchange.protocol import Exchange
from fl_core.privacy import within_target
from fl_core.site_policy import ApprovedStudy, SitePolicy
from fl_core.study import weights_architecture
from fl_core.types import Weights

log = structlog.get_logger("fedsilo.client")


@dataclass(frozen=True)
class PolicyRefusal:
    """Why the site policy declines a round: the rule, and a line for the federation."""

    rule: PolicyRule
    detail: str


def _short(digest: str) -> str:
    return digest[:12]


def _study_refusal(approved: ApprovedStudy, manifest: GlobalManifest) -> PolicyRefusal | None:
    """The config hash is approved, and the published study is the one it names."""
    where = f"federation {manifest.federation_id}"
    if manifest.config_hash not in approved.config_hashes:
        return PolicyRefusal(
            "study_not_approved",
            f"{where}: config hash {_short(manifest.config_hash)} is not approved by this "
            "hospital's site policy; its admin reviews it (fedsilo site approve) and adds it",
        )
    study = manifest.study
    if study is None or study.digest() != manifest.config_hash:
        return PolicyRefusal(
            "study_not_approved",
            f"{where}: the global manifest's study does not hash to its config hash "
            f"{_short(manifest.config_hash)}, so the approved study cannot be verified",
        )
    if study.federation_id != manifest.federation_id:
        return PolicyRefusal(
            "study_not_approved",
            f"{where}: the published study belongs to another federation",
        )
    return None


def _privacy_refusal(
    approved: ApprovedStudy, manifest: GlobalManifest, privacy: HospitalPrivacy | None
) -> PolicyRefusal | None:
    """The protection the policy asks of this study: the hospital's own DP-SGD at or under
    ``dp_sgd_max_epsilon``, and the study's secure aggregation."""
    where = f"federation {manifest.federation_id}"
    limit = approved.dp_sgd_max_epsilon
    if limit is not None:
        if privacy is None:
            return PolicyRefusal(
                "privacy_required",
                f"{where}: the site policy requires DP-SGD with epsilon <= {limit:g} and this "
                f"hospital trains without it; run it with --dp-target-epsilon {limit:g} or less",
            )
        target = privacy.settings.target_epsilon
        if not within_target(epsilon=target, target_epsilon=limit):
            return PolicyRefusal(
                "privacy_required",
                f"{where}: DP-SGD target epsilon {target:g} is above the site policy's "
                f"{limit:g}; lower --dp-target-epsilon",
            )
    study = manifest.study
    if approved.require_secure_aggregation and (study is None or not study.privacy.secagg.enabled):
        return PolicyRefusal(
            "privacy_required",
            f"{where}: the site policy requires secure aggregation and the study has "
            "privacy.secagg off",
        )
    return None


def _rounds_refusal(approved: ApprovedStudy, manifest: GlobalManifest) -> PolicyRefusal | None:
    limit = approved.max_rounds
    study = manifest.study
    if limit is None or study is None:
        return None
    if study.rounds > limit:
        return PolicyRefusal(
            "max_rounds",
            f"federation {manifest.federation_id}: the study runs {study.rounds} training "
            f"rounds, more than the site policy's max_rounds {limit}",
        )
    if manifest.task == "train" and manifest.round_index > limit:
        return PolicyRefusal(
            "max_rounds",
            f"federation {manifest.federation_id}: training round {manifest.round_index} is "
            f"past the site policy's max_rounds {limit}",
        )
    return None


@dataclass(frozen=True)
class SiteGate:
    """A hospital's site policy and its privacy ledger, checked on every round it serves."""

    policy: SitePolicy
    ledger: PrivacyLedger | None

    @classmethod
    def open(cls, policy: SitePolicy, site_ids: Sequence[str], state_dir: Path | None) -> SiteGate:
        """At client start: the policy must be this hospital's, and a site-wide budget needs
        the state folder that keeps its ledger (exit 2 otherwise)."""
        others = [site for site in site_ids if site != policy.site_id]
        if others:
            raise ConfigError(
                f"the site policy is site {policy.site_id}'s and this client serves "
                f"{', '.join(others[:3])}; give each hospital its own policy"
            )
        if policy.epsilon_budget is not None and state_dir is None:
            raise ConfigError(
                "the site policy sets epsilon_budget, which is kept in a ledger in the "
                "hospital's state folder; pass --state-dir DIR (FEDSILO_STATE_DIR)"
            )
        return cls(policy, None if state_dir is None else PrivacyLedger(state_dir))

    def serves(self, federation_id: str) -> bool:
        """Whether the policy lists the federation (its moments may be published at all)."""
        return self.policy.study(federation_id) is not None

    def refusal(
        self,
        manifest: GlobalManifest,
        received: Weights,
        privacy: HospitalPrivacy | None,
        training_rows: int,
    ) -> PolicyRefusal | None:
        """Why the policy declines this round (None: the hospital may serve it).

        ``received``: every tensor of the global model the hospital read. A training round
        within every rule reserves its DP-SGD spend in the ledger before it trains.
        """
        approved = self.policy.study(manifest.federation_id)
        if approved is None:
            return PolicyRefusal(
                "federation_not_served",
                f"federation {manifest.federation_id} is not among the studies of this "
                "hospital's site policy",
            )
        found = (
            _study_refusal(approved, manifest)
            or self._architecture_refusal(approved, manifest, received)
            or _privacy_refusal(approved, manifest, privacy)
            or _rounds_refusal(approved, manifest)
        )
        if found is None and manifest.task == "train" and training_rows > 0:
            found = self._budget_refusal(manifest, privacy)
        return found

    @staticmethod
    def _architecture_refusal(
        approved: ApprovedStudy, manifest: GlobalManifest, received: Weights
    ) -> PolicyRefusal | None:
        digest = weights_architecture(received)
        if digest in approved.architecture_digests:
            return None
        return PolicyRefusal(
            "architecture_not_approved",
            f"federation {manifest.federation_id}: the global model's architecture "
            f"{_short(digest)} is not approved by this hospital's site policy",
        )

    def _budget_refusal(
        self, manifest: GlobalManifest, privacy: HospitalPrivacy | None
    ) -> PolicyRefusal | None:
        budget = self.policy.epsilon_budget
        if budget is None:
            return None
        where = f"federation {manifest.federation_id}"
        if privacy is None:
            return PolicyRefusal(
                "epsilon_budget",
                f"{where}: the site policy caps privacy loss at epsilon {budget:g} over all "
                "studies and this hospital trains without DP-SGD (unbounded loss); run it "
                "with --dp-target-epsilon",
            )
        after = privacy.epsilon_after_round()
        if not within_target(epsilon=after, target_epsilon=privacy.settings.target_epsilon):
            return None  # the study's own budget declines it (privacy_budget_exhausted)
        assert self.ledger is not None  # SiteGate.open requires the state folder
        reached = self.ledger.reserve(manifest.federation_id, after, privacy.settings.delta, budget)
        if reached is None:
            return None
        return PolicyRefusal(
            "epsilon_budget",
            f"{where} round {manifest.round_index}: training would take the site's privacy "
            f"loss over all studies to epsilon {reached:.3g}, above its budget {budget:g}",
        )

    def oversize(self, update: UpdateManifest, size: int) -> UpdateManifest | None:
        """The declined answer when a finished training answer is over ``max_update_bytes``."""
        limit = self.policy.max_update_bytes
        if limit is None or size <= limit:
            return None
        refusal = PolicyRefusal(
            "max_update_bytes",
            f"site {update.site_id} round {update.round_index}: the answer is {size} bytes, "
            f"over the site policy's max_update_bytes {limit}",
        )
        return policy_decline(
            update.federation_id,
            update.site_id,
            update.round_index,
            update.task,
            update.global_sha256,
            refusal,
        )

    def declines(
        self,
        exchange: Exchange,
        manifest: GlobalManifest,
        site_id: str,
        received: Weights,
        privacy: HospitalPrivacy | None,
        training_rows: int,
    ) -> bool:
        """Check the round; on a refusal write the decline as the round's answer and say so.

        True: declined (and answered, or answered before a restart); False: go on.
        """
        refusal = self.refusal(manifest, received, privacy, training_rows)
        if refusal is None:
            return False
        update = policy_decline(
            manifest.federation_id,
            site_id,
            manifest.round_index,
            manifest.task,
            manifest.sha256,
            refusal,
        )
        log.warning(
            "site_policy_declined",
            site_id=site_id,
            round_index=manifest.round_index,
            rule=refusal.rule,
            detail=refusal.detail,
        )
        try:
            exchange.write_update(update, None)
        except ObjectExistsError:
            log.info("update_already_written", site_id=site_id, round_index=manifest.round_index)
        return True


def policy_decline(
    federation_id: str,
    site_id: str,
    round_index: int,
    task: Task,
    global_sha256: str,
    refusal: PolicyRefusal,
) -> UpdateManifest:
    """The round's answer when the policy refuses it: the rule and why, nothing measured."""
    return UpdateManifest(
        federation_id=federation_id,
        site_id=site_id,
        round_index=round_index,
        task=task,
        global_sha256=global_sha256,
        num_examples=0,
        nonce=secrets.token_hex(16),
        declined="policy",
        policy_rule=refusal.rule,
        declined_detail=refusal.detail[:500],
    )

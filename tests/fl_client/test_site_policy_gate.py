"""The site policy gate on real manifests, models and accountants, and the privacy ledger."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from fedsilo.engine.app import default_model
from fl_client.privacy_ledger import LEDGER_FILE, PrivacyLedger
from fl_client.private import HospitalPrivacy, open_hospital_privacy
from fl_client.site_policy_gate import SiteGate
from fl_core.config import FederationConfig, load_config
from fl_core.data.synthetic import FEATURES
from fl_core.errors import ConfigError
from fl_core.exchange.manifests import GlobalManifest, UpdateManifest
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.uri import open_store
from fl_core.hashing import sha256_hex
from fl_core.models import model_weights
from fl_core.serialisation import encode_weights
from fl_core.site_policy import ApprovedStudy, SitePolicy
from fl_core.study import Study, study_hash, weights_architecture
from fl_core.types import Weights
from fl_server.privacy_round import declined_decision

SITE = "site-001"


def study_config(**overrides: Any) -> FederationConfig:
    base = {"federation_id": "sepsis", "rounds": 4, "training.hidden_sizes": [8]}
    return load_config(overrides={**base, **overrides})


def model_of(config: FederationConfig) -> Weights:
    return model_weights(default_model(len(FEATURES), config))


def published(
    config: FederationConfig, round_index: int = 1, study: Study | None = None
) -> tuple[GlobalManifest, Weights]:
    weights = model_of(config)
    study = study or Study.of(config, FEATURES)
    manifest = GlobalManifest(
        federation_id=config.federation_id,
        round_index=round_index,
        task="train",
        sha256=sha256_hex(encode_weights(weights)),
        num_bytes=1,
        deadline_unix=0.0,
        invited_sites=[SITE],
        config_hash=study.digest(),
        created_unix=0.0,
        study=study,
    )
    return manifest, weights


def approval(config: FederationConfig, **terms: Any) -> ApprovedStudy:
    return ApprovedStudy(
        federation_id=config.federation_id,
        config_hashes=(study_hash(config, FEATURES),),
        architecture_digests=(weights_architecture(model_of(config)),),
        **terms,
    )


def gate_for(*studies: ApprovedStudy, tmp_path=None, **policy: Any) -> SiteGate:
    site_policy = SitePolicy(site_id=SITE, studies=studies, **policy)
    return SiteGate.open(site_policy, [SITE], tmp_path)


def dp_privacy(config: FederationConfig, target: float, state_dir) -> HospitalPrivacy:
    dp = load_config(
        overrides={
            **{k: v for k, v in config.model_dump(mode="json").items() if k != "data"},
            "privacy.dp_sgd": {"target_epsilon": target, "delta": 1e-4},
        }
    )
    privacy = open_hospital_privacy(dp, SITE, 500, 32, 1, state_dir)
    assert privacy is not None
    return privacy


def test_an_approved_study_passes_and_everything_else_is_named():
    config = study_config()
    manifest, weights = published(config)
    assert gate_for(approval(config)).refusal(manifest, weights, None, 100) is None

    other = load_config(overrides={"federation_id": "other"})
    assert gate_for(approval(other)).refusal(manifest, weights, None, 100).rule == (
        "federation_not_served"
    )
    fedprox = study_config(**{"strategy.name": "fedprox"})
    refused = gate_for(approval(fedprox)).refusal(manifest, weights, None, 100)
    assert refused.rule == "study_not_approved"
    assert study_hash(config, FEATURES)[:12] in refused.detail

    wider = study_config(**{"training.hidden_sizes": [16]})
    refused = gate_for(approval(config)).refusal(manifest, model_of(wider), None, 100)
    assert refused.rule == "architecture_not_approved"


def test_a_study_that_does_not_hash_to_the_approved_hash_is_refused():
    config = study_config()
    approved = gate_for(approval(config))
    manifest, weights = published(config)
    # the approved hash, but the study of another strategy published beside it
    tree = manifest.model_dump(mode="json")
    other = Study.of(study_config(rounds=99), FEATURES).model_dump(mode="json")
    swapped = GlobalManifest.model_validate({**tree, "study": other})
    assert approved.refusal(swapped, weights, None, 100).rule == "study_not_approved"
    missing = GlobalManifest.model_validate({**tree, "study": None})
    assert approved.refusal(missing, weights, None, 100).rule == "study_not_approved"


def test_privacy_required_and_max_rounds(tmp_path):
    config = study_config()
    manifest, weights = published(config)
    wants_dp = gate_for(approval(config, dp_sgd_max_epsilon=3.0))
    refused = wants_dp.refusal(manifest, weights, None, 100)
    assert refused.rule == "privacy_required" and "--dp-target-epsilon 3" in refused.detail
    loose = dp_privacy(config, 8.0, tmp_path / "loose")
    assert wants_dp.refusal(manifest, weights, loose, 100).rule == "privacy_required"
    tight = dp_privacy(config, 2.0, tmp_path / "tight")
    assert wants_dp.refusal(manifest, weights, tight, 100) is None

    wants_secagg = gate_for(approval(config, require_secure_aggregation=True))
    assert wants_secagg.refusal(manifest, weights, None, 100).rule == "privacy_required"

    short = gate_for(approval(config, max_rounds=3))
    refused = short.refusal(manifest, weights, None, 100)
    assert refused.rule == "max_rounds" and "4 training rounds" in refused.detail
    assert gate_for(approval(config, max_rounds=4)).refusal(manifest, weights, None, 100) is None


def test_the_epsilon_budget_counts_every_study(tmp_path):
    config = study_config()
    manifest, weights = published(config)
    with pytest.raises(ConfigError, match="--state-dir"):
        gate_for(approval(config), epsilon_budget=5.0)
    gate = gate_for(approval(config), tmp_path=tmp_path, epsilon_budget=5.0)
    refused = gate.refusal(manifest, weights, None, 100)
    assert refused.rule == "epsilon_budget" and "without DP-SGD" in refused.detail
    assert gate.refusal(manifest, weights, None, 0) is None  # no rows: nothing to spend

    privacy = dp_privacy(config, 4.0, tmp_path)
    after = privacy.epsilon_after_round()
    ledger = PrivacyLedger(tmp_path)
    assert ledger.reserve("another-study", 5.0 - after + 0.01, 1e-5, None) is None
    refused = gate.refusal(manifest, weights, privacy, 100)
    assert refused.rule == "epsilon_budget" and "above its budget 5" in refused.detail
    assert "sepsis" not in ledger.read().studies  # a refusal reserves nothing

    roomy = gate_for(approval(config), tmp_path=tmp_path, epsilon_budget=6.0)
    assert roomy.refusal(manifest, weights, privacy, 100) is None
    assert ledger.read().studies["sepsis"].epsilon == pytest.approx(after)


def test_a_decline_is_the_rounds_answer_and_the_aggregator_names_the_rule(tmp_path):
    config = study_config()
    manifest, weights = published(config)
    exchange = Exchange(open_store((tmp_path / "exchange").as_uri()), "sepsis")
    gate = gate_for(approval(study_config(rounds=5)))
    assert gate.declines(exchange, manifest, SITE, weights, None, 100)
    answer = UpdateManifest.model_validate_json(exchange.read_update_manifest_bytes(1, SITE))
    assert (answer.declined, answer.policy_rule) == ("policy", "study_not_approved")
    assert answer.evaluation is None and answer.train_loss is None
    decision = declined_decision(answer, 0.0)
    assert (decision.status, decision.reason) == ("declined", "policy study_not_approved")
    # a restarted hospital declining again does not fail on its earlier answer
    assert gate.declines(exchange, manifest, SITE, weights, None, 100)


def test_an_answer_over_the_size_limit_is_declined():
    config = study_config()
    gate = gate_for(approval(config), max_update_bytes=1000)
    update = UpdateManifest(
        federation_id="sepsis",
        site_id=SITE,
        round_index=1,
        task="train",
        global_sha256="0" * 64,
        num_examples=10,
        nonce="0" * 32,
        train_loss=0.5,
    )
    assert gate.oversize(update, 1000) is None
    declined = gate.oversize(update, 1001)
    assert declined is not None and declined.policy_rule == "max_update_bytes"
    assert declined.train_loss is None and declined.num_examples == 0


def test_a_policy_for_another_site_is_refused_at_start():
    policy = SitePolicy(site_id="site-002")
    with pytest.raises(ConfigError, match="site site-002's"):
        SiteGate.open(policy, [SITE], None)


def test_concurrent_reservations_never_pass_the_budget(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    granted: list[str] = []

    def spend(federation_id: str) -> None:
        for step in range(1, 11):
            if ledger.reserve(federation_id, 0.5 * step, 1e-5, budget=6.0) is not None:
                return
            granted.append(federation_id)

    threads = [threading.Thread(target=spend, args=(f"study-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    document = PrivacyLedger(tmp_path).read()
    assert document.total_epsilon() <= 6.0
    assert len(granted) >= 6  # the budget was spent, not refused outright
    assert len(document.studies) >= 1


def test_a_ledger_only_grows_and_a_broken_one_stops_the_hospital(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    assert ledger.reserve("sepsis", 2.0, 1e-5, None) is None
    assert ledger.reserve("sepsis", 1.0, 1e-5, None) is None  # a restored accountant
    assert ledger.read().studies["sepsis"].epsilon == 2.0
    (tmp_path / LEDGER_FILE).write_text('{"version": 1, "studies": {"x": {"epsilon": -1}}}')
    with pytest.raises(ConfigError, match="restore it from backup"):
        ledger.read()

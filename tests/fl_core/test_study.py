"""The study a hospital approves: its digest is the config hash, per-machine settings aside."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from fl_core.config import FederationConfig, load_config
from fl_core.exchange.manifests import GlobalManifest
from fl_core.serialisation import encode_weights
from fl_core.study import Study, file_architecture, study_hash, weights_architecture

FEATURES = ("age", "heart_rate")


def test_machine_settings_leave_the_hash_alone(tmp_path):
    data = tmp_path / "prepared"
    data.mkdir()
    base = load_config(overrides={"data.synthetic.hospitals": 4})
    elsewhere = load_config(
        overrides={
            "data.synthetic.hospitals": 4,
            "exchange.uri": "s3://other-bucket/prefix",
            "exchange.endpoint_url": "http://127.0.0.1:9",
            "simulation.workers": 7,
            "training.device": "cpu",
        }
    )
    assert study_hash(base, FEATURES) == study_hash(elsewhere, FEATURES)
    prepared = load_config(overrides={"data.source": "prepared", "data.path": str(data)})
    assert study_hash(prepared, FEATURES) == study_hash(FederationConfig(), FEATURES)


def test_what_the_federation_agreed_changes_the_hash():
    base = FederationConfig()
    fedprox = load_config(overrides={"strategy.name": "fedprox"})
    assert study_hash(fedprox, FEATURES) != study_hash(base, FEATURES)
    assert study_hash(base, FEATURES) != study_hash(base, ("age",))
    secagg = load_config(overrides={"privacy.secagg.enabled": True})
    assert study_hash(secagg, FEATURES) != study_hash(base, FEATURES)
    quorum = load_config(overrides={"round.min_sites": 3})
    assert study_hash(quorum) != study_hash(base)


def test_a_published_study_verifies_after_the_wire():
    config = load_config(overrides={"strategy.name": "fedadam", "rounds": 3})
    study = Study.of(config, FEATURES)
    assert study.digest() == study_hash(config, FEATURES)
    manifest = GlobalManifest(
        federation_id="demo",
        round_index=1,
        task="train",
        sha256="0" * 64,
        num_bytes=1,
        deadline_unix=0.0,
        invited_sites=["a"],
        config_hash=study.digest(),
        created_unix=0.0,
        study=study,
    )
    received = GlobalManifest.model_validate_json(manifest.model_dump_json())
    assert received.study is not None
    assert received.study.digest() == received.config_hash
    assert "device" not in received.study.canonical_json()


def test_a_study_refuses_unknown_keys():
    tree = Study.of(FederationConfig(), FEATURES).model_dump(mode="json")
    tree["exchange"] = {"uri": "s3://b/p"}
    with pytest.raises(ValidationError, match="exchange"):
        Study.model_validate(tree)


def test_architecture_digest_reads_shapes_not_values():
    weights = {"net.0.weight": np.zeros((4, 2), np.float32), "net.0.bias": np.ones(4, np.float32)}
    other_values = {name: array + 3 for name, array in weights.items()}
    wider = {**weights, "net.0.weight": np.zeros((5, 2), np.float32)}
    digest = weights_architecture(weights)
    assert digest == weights_architecture(other_values)
    assert digest == file_architecture(encode_weights(weights))
    assert digest != weights_architecture(wider)
    assert digest != weights_architecture({**weights, "net.0.bias": np.ones(4, np.float64)})


def test_personalisation_reads_in_either_spelling_and_hashes_as_approved() -> None:
    british = load_config(overrides={"personalisation.finetune_epochs": 2})
    american = load_config(overrides={"personalization.finetune_epochs": 2})
    assert british == american and british.personalisation.finetune_epochs == 2
    study = Study.of(british, FEATURES)
    # approved digests were taken over this key: it stays in the hashed form
    assert '"personalization":{"finetune_epochs":2' in study.canonical_json()
    assert Study.model_validate_json(study.model_dump_json()).digest() == study.digest()


APPROVED_DEFAULT_DIGEST = "a856c9cdc16660ac6e641a9ad0288051265d3f22e6f9ed53f8f53d63e825c889"
"""The default study's digest over FEATURES as hospitals approved it before the linear term
was a setting: a setting added later must not move it."""


def test_a_setting_added_later_leaves_approved_digests_and_counts_once_set() -> None:
    base = FederationConfig()
    assert study_hash(base, FEATURES) == APPROVED_DEFAULT_DIGEST
    assert "linear_skip" not in Study.of(base, FEATURES).canonical_json()
    skip = load_config(overrides={"training.linear_skip": True})
    assert '"linear_skip":true' in Study.of(skip, FEATURES).canonical_json()
    assert study_hash(skip, FEATURES) != APPROVED_DEFAULT_DIGEST
    published = Study.model_validate_json(Study.of(skip, FEATURES).model_dump_json())
    assert published.digest() == study_hash(skip, FEATURES)

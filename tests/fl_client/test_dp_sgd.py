"""DP-SGD at a hospital: Opacus trains the default model, the accountant rises, survives a
restart, and a round that would exceed the budget is refused."""

from __future__ import annotations

import json
import secrets

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fl_client.hospital import attach_privacy
from fl_client.privacy_budget import private_training, refuse_over_budget
from fl_client.private import STATE_FILE, accountant_path
from fl_core.errors import ConfigError
from fl_core.exchange.manifests import UpdateManifest
from fl_core.privacy import epsilon_for
from tests.fl_client._private_hospitals import dp_config, make_hospital

DP = {"privacy.dp_sgd.target_epsilon": 4.0, "privacy.dp_sgd.delta": 1e-4}


def train_rounds(hospital, config, rounds):
    epsilons = []
    for round_index in rounds:
        with private_training(hospital.trainer, hospital.privacy, round_index):
            hospital.trainer.train(hospital.data, round_index, seed=round_index)
        epsilons.append(hospital.privacy.epsilon())
    return epsilons


def answer_manifest(site_id: str, round_index: int) -> UpdateManifest:
    return UpdateManifest(
        federation_id="privacy",
        site_id=site_id,
        round_index=round_index,
        task="evaluate",
        global_sha256="0" * 64,
        num_examples=10,
        nonce=secrets.token_hex(16),
    )


def test_dp_sgd_trains_the_default_model_and_epsilon_rises_per_round(source, tmp_path):
    config = dp_config(**DP)
    hospital = make_hospital(source, config, state_dir=tmp_path)
    attach_privacy(hospital, config)
    before = hospital.trainer.get_weights()
    epsilons = train_rounds(hospital, config, [1, 2, 3])
    after = hospital.trainer.get_weights()
    assert set(after) == set(before)  # no "_module." prefix or extra tensors leak out
    assert not np.allclose(after["net.0.weight"], before["net.0.weight"])
    np.testing.assert_array_equal(after["input_std"], before["input_std"])
    assert 0 < epsilons[0] < epsilons[1] < epsilons[2] <= 4.0
    # every Opacus hook and attribute is gone: the trainer serves other hospitals next
    model = hospital.trainer.model
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())
    # the saved epsilon is Opacus's for exactly the steps taken
    plan = hospital.privacy.plan
    expected = epsilon_for(
        noise_multiplier=plan.noise_multiplier,
        sample_rate=plan.sample_rate,
        steps=3 * plan.steps_per_round,
        delta=1e-4,
    )
    assert epsilons[2] == pytest.approx(expected, rel=1e-9)
    saved = json.loads(accountant_path(tmp_path, config.federation_id).read_text())
    assert saved["rounds_trained"] == [1, 2, 3]
    assert saved["epsilon"] == pytest.approx(epsilons[2])


def test_restarted_hospital_resumes_its_accountant(source, tmp_path):
    config = dp_config(**DP)
    steady = make_hospital(source, config, state_dir=tmp_path / "steady")
    attach_privacy(steady, config)
    uninterrupted = train_rounds(steady, config, [1, 2, 3])

    first = make_hospital(source, config, state_dir=tmp_path / "restarted")
    attach_privacy(first, config)
    train_rounds(first, config, [1, 2])
    again = make_hospital(source, config, state_dir=tmp_path / "restarted")  # a new process
    attach_privacy(again, config)
    assert again.privacy.epsilon() == pytest.approx(uninterrupted[1], rel=1e-12)
    resumed = train_rounds(again, config, [3])
    assert resumed[0] == pytest.approx(uninterrupted[2], rel=1e-12)


def test_round_beyond_the_budget_is_refused_with_the_reason(source, tmp_path):
    # the budget is planned over 2 rounds of a 3-round federation: round 3 would exceed it
    config = dp_config(**DP, **{"privacy.dp_sgd.rounds": 2})
    hospital = make_hospital(source, config, state_dir=tmp_path)
    attach_privacy(hospital, config)
    site = hospital.site_id
    for round_index in (1, 2):
        assert refuse_over_budget(hospital.privacy, answer_manifest(site, round_index)) is None
        train_rounds(hospital, config, [round_index])
    spent = hospital.privacy.epsilon()
    declined = refuse_over_budget(hospital.privacy, answer_manifest(site, 3))
    assert declined is not None
    reread = UpdateManifest.model_validate_json(declined.model_dump_json())  # what admission parses
    assert reread.declined == "privacy_budget_exhausted"
    assert reread.task == "train"
    assert "above its target 4" in (reread.declined_detail or "")
    assert reread.privacy is not None and reread.privacy.epsilon == pytest.approx(spent)
    assert hospital.privacy.epsilon() == spent  # refusing spends nothing


def test_per_site_override_and_delta_checked_against_the_hospitals_rows(source, tmp_path):
    config = dp_config(**DP)
    hospital = make_hospital(source, config)
    rows = hospital.data.train.num_examples
    strict = dp_config(**DP, **{f"privacy.dp_sgd.sites.{hospital.site_id}": {"delta": 2.0 / rows}})
    with pytest.raises(ConfigError, match=rf"delta .* >= 1/n = 1/{rows} training rows"):
        attach_privacy(make_hospital(source, strict), strict)


def test_noise_too_low_for_the_target_is_refused_at_client_start(source):
    config = dp_config(**DP, **{"privacy.dp_sgd.noise_multiplier": 0.3})
    with pytest.raises(ConfigError, match=r"noise_multiplier 0\.3 is too low to keep target"):
        attach_privacy(make_hospital(source, config), config)


def test_dp_sgd_refuses_local_objectives_it_cannot_clip(source):
    config = dp_config(**DP, **{"strategy.name": "scaffold"})
    with pytest.raises(ConfigError, match="cannot run with strategy 'scaffold'"):
        attach_privacy(make_hospital(source, config), config)


def test_corrupt_state_is_refused_not_reset(source, tmp_path):
    config = dp_config(**DP)
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="restore it from backup"):
        attach_privacy(make_hospital(source, config, state_dir=tmp_path), config)


@settings(max_examples=25, deadline=None)
@given(
    noise=st.floats(0.5, 5.0),
    rate=st.floats(0.01, 1.0),
    steps=st.integers(1, 200),
    more=st.integers(1, 200),
)
def test_epsilon_is_monotone_in_steps(noise, rate, steps, more):
    fewer = epsilon_for(noise_multiplier=noise, sample_rate=rate, steps=steps, delta=1e-5)
    larger = epsilon_for(noise_multiplier=noise, sample_rate=rate, steps=steps + more, delta=1e-5)
    assert larger >= fewer > 0

"""SCAFFOLD end to end on non-IID synthetic hospitals: quality, the files, restarts."""

from __future__ import annotations

import numpy as np
import pytest

from fl_core.control_variates import CONTROL_PREFIX, split_controls

# SGD (momentum 0.9) at a rate where local steps drift apart between hospitals
OVERRIDES = {
    "rounds": 4,
    "data.synthetic.mean_stays": 400,
    "training.optimizer": "sgd",
    "training.learning_rate": 0.05,
    "training.min_local_steps": 30,
}
SCAFFOLD = {"strategy": {"name": "scaffold"}}


@pytest.fixture(scope="module")
def scaffold_run(kit, tmp_path_factory):
    return kit.run(tmp_path_factory.mktemp("scaffold"), kit.config(**OVERRIDES, **SCAFFOLD))


def test_scaffold_reaches_fedavg_auroc_in_the_same_rounds(kit, scaffold_run, tmp_path):
    fedavg = kit.run(tmp_path, kit.config(**OVERRIDES))
    print(f"final pooled test AUROC: scaffold {scaffold_run.final_auroc:.4f}, "
          f"fedavg {fedavg.final_auroc:.4f}")  # fmt: skip
    assert scaffold_run.final_auroc >= fedavg.final_auroc - 0.002


def test_control_tensors_travel_in_updates_and_globals(scaffold_run):
    first = scaffold_run.global_weights(1)
    _, controls = split_controls(first)
    assert controls and all(not c.any() for c in controls.values())  # c = 0 before round 1
    assert "net.0.weight" in controls and "input_mean" in controls
    update = scaffold_run.update_weights(1, "site-001")
    assert update.keys() == first.keys()
    _, deltas = split_controls(update)
    assert np.abs(deltas["net.0.weight"]).sum() > 0
    assert not deltas["input_mean"].any()  # a buffer: no gradient, no control
    second = scaffold_run.global_weights(2)
    _, c = split_controls(second)
    assert np.abs(c["net.0.weight"]).sum() > 0 and not c["input_mean"].any()
    final = scaffold_run.global_weights(scaffold_run.config.rounds + 1)
    assert any(name.startswith(CONTROL_PREFIX) for name in final)


def _restarted_from(kit, config, state_dir, restart_round):
    """Hospitals replaced by fresh ones (new trainers, same state folder) at a round."""
    first = kit.hospitals(config, state_dir)
    later: list = []

    def hospitals(round_index: int):
        if round_index < restart_round:
            return first
        if not later:
            later.extend(kit.hospitals(config, state_dir))
        return later

    return hospitals


def test_a_restarted_hospital_keeps_its_control_variate(kit, scaffold_run, tmp_path):
    config = scaffold_run.config
    state = tmp_path / "hospital-state"
    restarted = kit.run(tmp_path / "a", config, _restarted_from(kit, config, state, 3))
    final = config.rounds + 1
    assert (state / "site-001" / "scaffold_control.safetensors").is_file()
    for name, value in scaffold_run.global_weights(final).items():
        np.testing.assert_allclose(restarted.global_weights(final)[name], value, atol=1e-6)
    # without the state folder the restarted hospitals start from c_i = 0: another model
    forgetful = kit.run(tmp_path / "b", config, _restarted_from(kit, config, None, 3))
    differs = forgetful.global_weights(final)["net.0.weight"]
    assert not np.allclose(differs, scaffold_run.global_weights(final)["net.0.weight"])


def test_an_aggregator_restart_recomputes_the_same_model(kit, scaffold_run, tmp_path):
    """The aggregator dies after round 2's result.json; c comes back with the global model.

    The hospitals answer round 2 again on resume (their updates exist): their c_i must not
    advance twice.
    """
    config = scaffold_run.config
    hospitals = kit.hospitals(config)
    with pytest.raises(kit.crash):
        kit.run(tmp_path, config, lambda _r: hospitals, crash_after_round=2)
    resumed = kit.run(tmp_path, config, lambda _r: hospitals)
    final = config.rounds + 1
    for name, value in scaffold_run.global_weights(final).items():
        np.testing.assert_allclose(resumed.global_weights(final)[name], value, atol=1e-6)

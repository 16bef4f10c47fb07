"""FedProx end to end: a strong proximal term keeps each hospital's model near the global one."""

from __future__ import annotations

import numpy as np

from fl_core.config import FedProxStrategy


def _mean_distance(run, round_index: int = 1) -> float:
    """Mean over hospitals of ||y_i - x|| (all tensors) in one round."""
    x = run.global_weights(round_index)
    distances = []
    for site_id in ("site-001", "site-002", "site-003", "site-004"):
        y = run.update_weights(round_index, site_id)
        distances.append(np.sqrt(sum(float(((y[k] - x[k]) ** 2).sum()) for k in x)))
    return float(np.mean(distances))


def test_large_mu_stays_closer_to_the_global_model_than_fedavg(kit, tmp_path):
    common = {"rounds": 1, "training.learning_rate": 0.01, "training.min_local_steps": 30}
    fedavg = kit.run(tmp_path / "fedavg", kit.config(**common))
    fedprox = kit.run(
        tmp_path / "fedprox", kit.config(**common, strategy={"name": "fedprox", "mu": 10.0})
    )
    assert isinstance(fedprox.config.strategy, FedProxStrategy)
    near, far = _mean_distance(fedprox), _mean_distance(fedavg)
    print(f"mean ||y_i - x|| after round 1: fedprox(mu=10) {near:.4f}, fedavg {far:.4f}")
    assert near < 0.7 * far
    # the update files carry the model alone (no extra tensors for FedProx)
    assert fedprox.update_weights(1, "site-001").keys() == fedprox.global_weights(1).keys()

"""The framework comparison runs end to end on a tiny federation and compares like with like.

No timing is asserted (the machine is shared). What is asserted: the plain loop and fedsilo
train the same model (same final weights up to float summation order), every measured number
is finite and positive, and Flower rows say "not measured" when its environment is absent.
Flower itself is exercised only where ``bench/.venv-flower`` exists (``make bench`` creates
it; ``make test`` does not).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from bench import _federation, flower_compare
from bench.aggregation import measure_flower, read_updates, write_updates
from bench.plain_loop import run_plain
from fl_core.aggregation import weighted_mean
from fl_core.config import FederationConfig, SimulationConfig

ABSENT = flower_compare.FlowerEnv(None, "absent in this test")


def _tiny(mean_stays: int) -> FederationConfig:
    """3 hospitals, 2 rounds, one hospital worker (one process start instead of two)."""
    config = _federation.benchmark_config(hospitals=3, rounds=2, mean_stays=mean_stays)
    return config.model_copy(update={"simulation": SimulationConfig(workers=1)})


def _finite_positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def test_plain_loop_and_fedsilo_train_the_same_model(tmp_path: Path) -> None:
    config = _tiny(mean_stays=80)

    result, plain_weights = run_plain(config, threads=1)

    assert len(result.round_seconds) == 2 and all(s > 0 for s in result.round_seconds)
    assert all(0.5 < auroc <= 1.0 for auroc in result.round_auroc)
    from fedsilo.engine.process_engine import simulate

    fedsilo_run = simulate(config, tmp_path, run_id="same-model")
    assert plain_weights.keys() == fedsilo_run.final_weights.keys()
    for name, array in plain_weights.items():
        np.testing.assert_allclose(array, fedsilo_run.final_weights[name], rtol=1e-4, atol=1e-6)


def test_weighted_average_by_hand_is_fedavg() -> None:
    rng = np.random.default_rng(0)
    updates = [({"w": rng.random((3, 4), dtype=np.float32)}, int(n)) for n in (5, 40, 7)]

    by_hand = _federation.weighted_average(updates)

    np.testing.assert_allclose(by_hand["w"], weighted_mean(updates)["w"], rtol=1e-6)
    assert by_hand["w"].dtype == np.float32


def test_federation_table_without_flower(tmp_path: Path) -> None:
    config = _tiny(mean_stays=60)

    runs = flower_compare.run_federations(ABSENT, config, workdir=tmp_path, repeats=1)

    plain, plain2, fedsilo, inside, flower = runs
    assert plain2.name.endswith("2 processes")
    for run in (plain, plain2, fedsilo):
        assert len(run.runs) == 1
        assert _finite_positive(run.median(flower_compare._whole)), run
        assert _finite_positive(run.median(flower_compare._steady)), run
        assert run.runs[0].final_auroc is not None and 0.5 < run.runs[0].final_auroc <= 1.0
    assert _finite_positive(inside.median(flower_compare._inside))
    # the plain loop on two processes trains the very same model as on one
    assert plain2.runs[0].final_auroc == plain.runs[0].final_auroc
    assert fedsilo.runs[0].final_auroc == pytest.approx(plain.runs[0].final_auroc, abs=1e-3)
    assert not flower.values(flower_compare._whole)
    assert flower.note.startswith(flower_compare.NOT_MEASURED)
    assert list(tmp_path.iterdir()) == []  # run folders removed
    flower_compare.render_federations(runs, config, "smoke")


def test_missing_flower_env_is_reported_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flower_compare, "FLOWER_VENV", tmp_path / "none")

    env = flower_compare.flower_env(create=False)

    assert env.python is None and "no Flower environment" in env.reason


FLOWER = flower_compare.flower_env(create=False)


@pytest.mark.skipif(FLOWER.python is None, reason=FLOWER.reason)
def test_flower_aggregate_averages_the_same_updates(tmp_path: Path) -> None:
    updates = write_updates(tmp_path / "updates", num_updates=4, num_params=1_001, seed=5)
    flower_result = tmp_path / "flower.safetensors"

    assert FLOWER.python is not None
    measured = measure_flower(FLOWER.python, updates, result_path=flower_result)

    assert measured.seconds > 0 and measured.peak_rss_bytes > 0
    assert measured.load_seconds is not None and measured.load_seconds > 0
    expected = weighted_mean([(w, int(n)) for w, n in read_updates(updates, 4)])
    averaged = safetensors.numpy.load_file(str(flower_result))
    assert averaged.keys() == expected.keys()
    for name, array in averaged.items():
        np.testing.assert_allclose(array, expected[name], rtol=1e-5, atol=1e-7)


def test_plain_loop_workers_get_balanced_shares_of_every_hospital() -> None:
    from bench.plain_loop import _shares
    from fl_client.tabular import planned_steps

    config = _federation.benchmark_config(hospitals=12, rounds=1, mean_stays=300)
    sites = _federation.load_sites(config)
    shares = _shares(config, sites, 2)
    assert sorted(i for share in shares for i in share) == list(range(len(sites)))
    steps = [planned_steps(site.train.num_examples, config.training) for site in sites]
    loads = [sum(steps[i] for i in share) for share in shares]
    assert abs(loads[0] - loads[1]) <= max(steps)  # LPT: within one hospital of even
    dealt = [sum(steps[k::2]) for k in range(2)]
    assert max(loads) <= max(dealt)  # never worse than dealing round-robin

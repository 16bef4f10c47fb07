"""The default federation end to end: quality bar, determinism, files, bounded processes."""

from __future__ import annotations

import json

import numpy as np
import psutil
import pytest

from fedsilo.engine.app import DEFAULT_APP, build_source
from fedsilo.engine.federation import SimulationEvents
from fedsilo.engine.process_engine import simulate
from fedsilo.ops.baselines import federated_test_auroc, local_only_aurocs, pooled_auroc
from fl_core.config import load_config
from fl_core.serialisation import decode_weights

pytestmark = pytest.mark.slow


class CountingEvents(SimulationEvents):
    """Records how many child processes exist while rounds run."""

    def __init__(self, rounds: int) -> None:
        super().__init__(rounds)
        self.max_children = 0
        # processes other tests left behind are not the simulation's
        self.before = {p.pid for p in psutil.Process().children(recursive=True)}

    def round_opened(self, manifest) -> None:
        children = psutil.Process().children(recursive=True)
        new = [p for p in children if p.pid not in self.before]
        self.max_children = max(self.max_children, len(new))


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    config = load_config()  # exactly what `make run` trains
    out = tmp_path_factory.mktemp("runs")
    events = CountingEvents(config.rounds)
    result = simulate(config, out, events=events, run_id="default")
    return config, result, events


def test_default_run_writes_metrics_model_and_exchange(default_run):
    config, result, _ = default_run
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["round"] for r in rows] == list(range(1, config.rounds + 1))
    for row in rows:
        assert {
            "round",
            "auroc",
            "auprc",
            "loss",
            "sites_accepted",
            "sites_rejected",
            "seconds",
        } <= row.keys()
        assert row["sites_accepted"] == 20 and row["sites_rejected"] == 0
    model = decode_weights((result.run_dir / "model.safetensors").read_bytes())
    assert model.keys() == result.final_weights.keys()
    rounds = result.run_dir / "exchange" / "federations" / "demo" / "rounds"
    assert len(list(rounds.glob("*/global.safetensors"))) == config.rounds + 1
    assert len(list(rounds.glob("000001/updates/*.safetensors"))) == 20


def test_federated_auroc_near_pooled_and_above_local_only(default_run):
    config, result, _ = default_run
    source = build_source(config)
    sites = [source.load_site(s) for s in source.site_ids()]
    federated = result.rows[-1].auroc
    assert federated is not None
    pooled = pooled_auroc(DEFAULT_APP, config, sites)
    local = local_only_aurocs(DEFAULT_APP, config, sites)
    print(
        f"federated {federated:.4f} pooled {pooled:.4f} local-only mean {np.mean(local):.4f} "
        f"over {len(local)} hospitals"
    )
    assert abs(federated - pooled) <= 0.02
    assert federated > np.mean(local)


def test_histogram_auroc_matches_exact_pooled_auroc(default_run):
    config, result, _ = default_run
    source = build_source(config)
    sites = [source.load_site(s) for s in source.site_ids()]
    exact = federated_test_auroc(DEFAULT_APP, config, result.final_weights, sites)
    assert result.rows[-1].auroc == pytest.approx(exact, abs=2e-3)


def test_hospital_processes_are_bounded(default_run):
    _, _, events = default_run
    # two hospital workers (one per core here) plus at most the fork server they start from
    # and multiprocessing's resource tracker: never a process per hospital
    assert 1 <= events.max_children <= 4


def test_same_seed_same_model(default_run, tmp_path):
    config, result, _ = default_run
    again = simulate(config, tmp_path, run_id="again")
    for name, value in result.final_weights.items():
        np.testing.assert_allclose(again.final_weights[name], value, rtol=1e-5, atol=1e-6)
    assert [r.auroc for r in again.rows] == pytest.approx([r.auroc for r in result.rows], abs=1e-6)


def test_many_hospitals_share_few_processes(tmp_path):
    config = load_config(
        overrides={
            "rounds": 1,
            "data.synthetic.hospitals": 40,
            "data.synthetic.mean_stays": 60,
            "simulation.workers": 2,
        }
    )
    events = CountingEvents(config.rounds)
    result = simulate(config, tmp_path, events=events, run_id="many")
    assert result.rows[0].sites_accepted == 40
    assert events.max_children <= 3

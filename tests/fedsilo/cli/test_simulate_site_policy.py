"""``fedsilo simulate --site-policy``: the hospitals in workers enforce policies as ``client run``.

Real ``fedsilo simulate`` processes over their run folder's own exchange; what a policy
withholds or declines is read back from the exchange's round results and from ``fedsilo
status`` on the run folder.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from fedsilo.engine.app import build_source
from fedsilo.engine.run_folder import run_exchange_uri
from fedsilo.engine.site_policies import place_policies
from fedsilo.testing.cli import run_fedsilo
from fedsilo.testing.moto_s3 import offline_env
from fl_core.config import FederationConfig, load_config
from fl_core.disclosure import DisclosureFloor, below_floor
from fl_core.exchange.manifests import RoundResult
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.uri import open_store
from fl_core.site_policy import SitePolicy
from tests.fedsilo.engine._folder_federation import POLICY_ENV, approval, write_policy

HOSPITALS = 4
ROUNDS = 2
FINAL_ROUND = ROUNDS + 1  # the final evaluation


def federation_config(tmp_path: Path) -> Path:
    tree = {
        "federation_id": "sepsis",
        "rounds": ROUNDS,
        "data": {"synthetic": {"hospitals": HOSPITALS, "mean_stays": 60}},
        "training": {"hidden_sizes": [8], "min_local_steps": 2},
        "evaluation": {"histogram_bins": 20},
        "round": {"min_sites": 1, "deadline_s": 120.0, "poll_interval_s": 0.05},
        "simulation": {"workers": 2},
    }
    path = tmp_path / "sepsis.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def simulate(tmp_path: Path, config: Path, *policies: Path) -> Path:
    """Run the federation with ``policies``; returns its run folder."""
    flags = [arg for policy in policies for arg in ("--site-policy", str(policy))]
    done = run_fedsilo(
        "simulate", "--config", str(config), *flags, "--out", str(tmp_path / "runs"),
        "--run-id", "policed", cwd=tmp_path, env=offline_env(tmp_path, unset=POLICY_ENV),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return tmp_path / "runs" / "policed"


def round_result(config: FederationConfig, run_dir: Path, round_index: int) -> RoundResult:
    exchange = Exchange(open_store(run_exchange_uri(config, run_dir)), config.federation_id)
    result = exchange.read_result(round_index)
    assert result is not None
    return result


def status_of(tmp_path: Path, run_dir: Path) -> str:
    shown = run_fedsilo(
        "status", str(run_dir), cwd=tmp_path, env=offline_env(tmp_path, unset=POLICY_ENV),
        columns=400,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    return " ".join(shown.stdout.split())  # the header wraps on a narrow terminal


def test_one_policy_with_a_floor_withholds_the_small_hospitals_evaluations(tmp_path):
    config_path = federation_config(tmp_path)
    config = load_config(config_path)
    source = build_source(config)
    test_splits = {site: source.load_site(site).test for site in source.site_ids()}
    # the largest test split with a death sets the floor: the smaller ones fall under it
    with_deaths = [len(split.y) for split in test_splits.values() if split.y.sum() > 0]
    floor = DisclosureFloor(min_stays=max(with_deaths), min_events=1)
    small = [
        site
        for site, split in test_splits.items()
        if below_floor(floor, len(split.y), int(split.y.sum())) is not None
    ]
    assert 0 < len(small) < HOSPITALS  # the data set the test apart: some small, one not
    # a policy of no simulated hospital: every hospital enforces it under its own id
    policy = write_policy(
        tmp_path / "every.yaml",
        "site-template",
        approval(config),
        disclosure_floor=floor.model_dump(),
    )

    run_dir = simulate(tmp_path, config_path, policy)

    final = round_result(config, run_dir, FINAL_ROUND)
    assert sum(final.withheld_evaluations.values()) == len(small)
    assert {d.site_id for d in final.accepted} == set(test_splits)  # withheld, not declined
    assert "evaluations withheld by disclosure floors" in status_of(tmp_path, run_dir)


def test_a_hospital_whose_policy_lacks_the_study_hash_declines_every_round(tmp_path):
    config_path = federation_config(tmp_path)
    config = load_config(config_path)
    earlier = load_config(config_path, {"rounds": ROUNDS + 1})  # not the study that runs
    stale = write_policy(tmp_path / "stale.yaml", "site-002", approval(earlier))

    run_dir = simulate(tmp_path, config_path, stale)

    for round_index in range(1, FINAL_ROUND + 1):
        result = round_result(config, run_dir, round_index)
        assert {d.site_id: d.reason for d in result.declined} == {
            "site-002": "policy study_not_approved"
        }
        assert "site-002" not in {d.site_id for d in result.accepted}
    shown = status_of(tmp_path, run_dir)
    assert "declined: policy study_not_approved" in shown
    assert "site-002" in shown


def test_policies_are_placed_by_site_id_and_one_template_reaches_the_rest():
    own = SitePolicy(site_id="site-001", max_update_bytes=10)
    template = SitePolicy(site_id="site-999", max_update_bytes=20)
    sites = ["site-001", "site-002", "site-003"]

    placed = place_policies([own, template], sites)

    assert placed["site-001"] is own
    assert {s: (p.site_id, p.max_update_bytes) for s, p in placed.items()} == {
        "site-001": ("site-001", 10),
        "site-002": ("site-002", 20),
        "site-003": ("site-003", 20),
    }
    assert place_policies([own], sites) == {"site-001": own}  # the others serve without one


def test_two_policies_for_the_rest_stop_simulate_with_one_line(tmp_path):
    config_path = federation_config(tmp_path)
    first = write_policy(tmp_path / "a.yaml", "site-900")
    second = write_policy(tmp_path / "b.yaml", "site-901")
    done = run_fedsilo(
        "simulate", "--config", str(config_path), "--site-policy", str(first),
        "--site-policy", str(second), "--out", str(tmp_path / "runs"), cwd=tmp_path,
        env=offline_env(tmp_path, unset=POLICY_ENV),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "only one policy may apply to the hospitals without their own" in done.stderr
    assert not (tmp_path / "runs").exists()  # refused before any run folder

"""The federated data profile from a real run: hospitals in their own processes send their
profile with the round-0 moments report over a folder exchange; the centre pools it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedsilo.engine.app import build_source
from fedsilo.engine.process_engine import simulate
from fedsilo.ops.data_profile import federated_profile
from fedsilo.ops.profile_view import write_data_profile
from fedsilo.testing.cli import run_fedsilo
from fl_core.config import load_config
from fl_core.data.feature_schema import schema_from_names
from fl_core.data.profile import bin_counts, profile_edges
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.uri import open_store

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    config = load_config(
        overrides={
            "rounds": 1,
            "data.synthetic.hospitals": 4,
            "data.synthetic.mean_stays": 60,
            "simulation.workers": 2,
            "round.min_sites": 2,
        }
    )
    result = simulate(config, tmp_path_factory.mktemp("runs"), run_id="profile")
    exchange = Exchange(open_store(result.exchange_uri), config.federation_id)
    return config, exchange, result


def test_the_pooled_profile_is_the_pooled_data_in_every_bin_no_hospital_withheld(run) -> None:  # type: ignore[no-untyped-def]
    config, exchange, _ = run
    source = build_source(config)
    sites = {s: source.load_site(s) for s in source.site_ids()}
    profile = federated_profile(exchange, config.admission.max_num_examples)
    assert sorted(s.site_id for s in profile.sites) == sorted(sites)
    assert not profile.refused
    schema = schema_from_names(source.feature_names())
    withheld_cells = 0
    for index, feature in enumerate(profile.pooled.features):
        assert feature.name == schema.features[index].name
        edges = profile_edges(schema.features[index])
        direct = {s: bin_counts(d.train.x[:, index], edges) for s, d in sites.items()}
        for b, count in enumerate(feature.counts):
            withheld = feature.withheld_by[b]
            withheld_cells += len(withheld)
            if not withheld:
                assert count == sum(d[b] for d in direct.values())
            else:  # the withheld hospitals' cells are not in the count, and were not shown
                assert count == sum(d[b] for s, d in direct.items() if s not in withheld)
                assert all(direct[s][b] > 0 for s in withheld)
        for site, missing in feature.missing.items():
            real = int(np.isnan(sites[site].train.x[:, index]).sum())
            present = sites[site].train.num_examples - real
            if missing is None:  # withheld: the missing or the present rows are under 10
                assert 0 < real < 10 or 0 < present < 10
            else:
                assert missing == real
    assert withheld_cells > 0  # 60-stay hospitals have small cells: they were withheld


def test_the_command_writes_the_profile_and_says_what_was_withheld(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config, _, result = run
    out = tmp_path / "profile"
    done = run_fedsilo(
        "data", "profile", "--exchange", result.exchange_uri,
        "--federation-id", config.federation_id, "--out", str(out), cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 hospitals profiled, 0 refused" in done.stdout
    document = json.loads((out / "data-profile.json").read_text())
    assert len(document["pooled"]["features"]) == len(build_source(config).feature_names())
    page = (out / "data-profile.html").read_text()
    assert "withheld by" in page and 'id="missingness"' in page


def test_a_hospital_with_a_hostile_profile_is_named_and_the_rest_are_pooled(run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config, exchange, _ = run
    site = sorted(s.site_id for s in federated_profile(exchange, 10**7).sites)[0]
    key = exchange.layout.moments_key(site)
    document = json.loads(exchange.store.get(key))
    document["profile"]["features"][0]["counts"] = [10**6] * len(
        document["profile"]["features"][0]["counts"]
    )
    copy = Exchange(open_store((tmp_path / "exchange").as_uri()), config.federation_id)
    for other in exchange.store.list_keys(exchange.layout.preflight_prefix()):
        data = json.dumps(document).encode() if other == key else exchange.store.get(other)
        copy.store.put_new(other, data)
    profile = federated_profile(copy, config.admission.max_num_examples)
    assert profile.refused == {site: "malformed_profile"}
    assert len(profile.sites) == 3
    write_data_profile(profile, tmp_path / "out")
    assert "malformed_profile" in (tmp_path / "out" / "data-profile.html").read_text()


def test_the_run_report_shows_the_cohort(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from fedsilo.ops.report import write_report

    _, _, result = run
    write_report(result.run_dir, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert 'id="data-profile"' in page and 'id="missingness"' in page


def test_a_hospital_reads_the_schema_from_the_published_study(run) -> None:  # type: ignore[no-untyped-def]
    from fedsilo.ops.site_check import published_schema

    config, exchange, _ = run
    schema = published_schema(exchange)
    assert schema == schema_from_names(build_source(config).feature_names())
    assert {f.kind for f in schema.features} == {"numeric", "indicator", "onehot"}


def test_a_report_too_large_to_read_is_named_and_never_read(run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fedsilo.ops.data_profile import MAX_PROFILE_FEATURES
    from fl_server.moments import max_report_bytes

    config, exchange, _ = run
    site = sorted(s.site_id for s in federated_profile(exchange, 10**7).sites)[0]
    key = exchange.layout.moments_key(site)
    copy = Exchange(open_store((tmp_path / "exchange").as_uri()), config.federation_id)
    huge = b" " * (max_report_bytes(MAX_PROFILE_FEATURES) + 1)
    for other in exchange.store.list_keys(exchange.layout.preflight_prefix()):
        copy.store.put_new(other, huge if other == key else exchange.store.get(other))
    profile = federated_profile(copy, config.admission.max_num_examples)
    assert profile.refused == {site: "too_large"}
    assert len(profile.sites) == 3

"""Site policies enforced by real ``fedsilo client run`` processes over a folder exchange.

An aggregator (``fedsilo server run``) and hospitals run as separate processes; each hospital
reads its own policy file. What a policy refuses is declined with its rule, recorded by the
aggregator and shown by ``fedsilo status``; a newly approved hash is served after a restart
with the new policy; a site's epsilon budget holds across two federations run at once.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from fedsilo.testing.cli import run_fedsilo
from fedsilo.testing.moto_s3 import offline_env
from fl_client.privacy_ledger import PrivacyLedger
from fl_core.config import load_config
from fl_core.data.synthetic import FEATURES
from fl_core.exchange.manifests import RoundResult
from fl_core.site_policy import parse_site_policy
from fl_core.study import study_hash
from tests.fedsilo.engine._folder_federation import (
    POLICY_ENV,
    TIMEOUT_S,
    FolderFederation,
    approval,
    write_policy,
)


def fedsilo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_fedsilo(*args, cwd=cwd, env=offline_env(cwd, unset=POLICY_ENV), columns=400)


def declined_reasons(result: RoundResult | None) -> dict[str, str | None]:
    assert result is not None
    return {d.site_id: d.reason for d in result.declined}


def accepted_sites(result: RoundResult | None) -> set[str]:
    assert result is not None
    return {d.site_id for d in result.accepted}


def test_unapproved_studies_and_architectures_are_declined_and_shown(tmp_path):
    federation = FolderFederation(tmp_path, "sepsis", **{"data.synthetic.hospitals": 3})
    config = federation.config
    fedprox = load_config(federation.config_path, {"strategy.name": "fedprox"})
    wider = load_config(federation.config_path, {"training.hidden_sizes": [16]})
    trusting = write_policy(tmp_path / "p1.yaml", "site-001", approval(config))
    other_strategy = write_policy(tmp_path / "p2.yaml", "site-002", approval(fedprox))
    other_model = {
        **approval(config),
        "architecture_digests": approval(wider)["architecture_digests"],
    }
    other_architecture = write_policy(tmp_path / "p3.yaml", "site-003", other_model)

    server = federation.start_server()
    clients = [
        federation.start_client("site-001", trusting),
        federation.start_client("site-002", other_strategy),
        federation.start_client("site-003", other_architecture),
    ]
    federation.finish(server, *clients)

    for round_index in (1, 2, 3):  # two training rounds and the final evaluation
        assert declined_reasons(federation.result(round_index)) == {
            "site-002": "policy study_not_approved",
            "site-003": "policy architecture_not_approved",
        }
    assert accepted_sites(federation.result(1)) == {"site-001"}
    status = fedsilo(
        "status", "--exchange", federation.exchange_dir.as_uri(), "--federation", "sepsis",
        cwd=tmp_path,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert "declined: policy study_not_approved" in status.stdout
    assert "declined: policy architecture_not_approved" in status.stdout

    # what the admins of site-002 and site-003 read before approving, from the exchange
    approve = fedsilo(
        "site", "approve", "--exchange", federation.exchange_dir.as_uri(),
        "--federation-id", "sepsis", cwd=tmp_path,
    )  # fmt: skip
    assert approve.returncode == 0, approve.stderr
    snippet = approve.stdout[approve.stdout.index("# site policy snippet") :]
    (entry,) = yaml.safe_load(snippet)
    expected = approval(config)
    assert entry["config_hashes"] == expected["config_hashes"]
    assert entry["architecture_digests"] == expected["architecture_digests"]
    assert entry["max_rounds"] == 2 and entry["require_secure_aggregation"] is False
    pasted = write_policy(tmp_path / "pasted.yaml", "site-002", entry)
    assert parse_site_policy(pasted.read_text(), "pasted").study("sepsis") is not None
    shown = fedsilo("study", "show", "--config", str(federation.config_path), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"config hash {study_hash(config, FEATURES)}" in shown.stdout


def test_a_changed_config_is_refused_until_its_hash_is_approved(tmp_path):
    federation = FolderFederation(tmp_path, "sepsis", rounds=3)
    config = federation.config
    earlier = load_config(federation.config_path, {"rounds": 2})  # what the site approved
    assert study_hash(earlier, FEATURES) != study_hash(config, FEATURES)
    stale = write_policy(tmp_path / "stale.yaml", "site-001", approval(earlier))

    server = federation.start_server()
    first = federation.start_client("site-001", stale)
    other = federation.start_client("site-002", None)
    federation.group.wait_for(
        "site-001's decline of round 1",
        lambda: federation.answered(1, "site-001"),
        TIMEOUT_S,
        0.05,
        watch=[server, first, other],
    )
    first.kill()  # the admin reviews the new study, approves its hash and restarts the client
    both = [study_hash(earlier, FEATURES), study_hash(config, FEATURES)]
    approved = write_policy(
        tmp_path / "new.yaml", "site-001", {**approval(config), "config_hashes": both}
    )
    restarted = federation.start_client("site-001", approved)
    federation.finish(server, restarted, other)

    assert declined_reasons(federation.result(1)) == {"site-001": "policy study_not_approved"}
    assert accepted_sites(federation.result(3)) == {"site-001", "site-002"}
    assert any(e.get("event") == "no_site_policy" for e in other.events())


def test_the_epsilon_budget_holds_across_two_federations_run_at_once(tmp_path):
    budget = 4.0
    state = tmp_path / "state"
    federations = [FolderFederation(tmp_path / name, name, rounds=3) for name in ("sepsis", "aki")]
    studies = [approval(f.config, dp_sgd_max_epsilon=3.0) for f in federations]
    policy = write_policy(tmp_path / "site.yaml", "site-001", *studies, epsilon_budget=budget)
    dp = ["--state-dir", str(state), "--dp-target-epsilon", "3", "--dp-delta", "1e-3"]
    procs = []
    for federation in federations:
        procs.append(federation.start_server())
        procs.append(federation.start_client("site-001", policy, *dp))
        procs.append(federation.start_client("site-002", None))
    for federation in federations:
        federation.finish(*[p for p in procs if p in federation.group.procs])

    ledger = PrivacyLedger(state).read()
    assert set(ledger.studies) <= {"sepsis", "aki"}
    assert ledger.total_epsilon() <= budget + 1e-9
    trained = sum("site-001" in accepted_sites(f.result(r)) for f in federations for r in (1, 2, 3))
    refused = [
        reason
        for f in federations
        for r in (1, 2, 3)
        if (reason := declined_reasons(f.result(r)).get("site-001")) is not None
    ]
    assert trained >= 1
    assert "policy epsilon_budget" in refused  # three rounds of each would cost about 6
    summary = fedsilo(
        "site", "status", "--state-dir", str(state), "--site-policy", str(policy), cwd=tmp_path
    )
    assert summary.returncode == 0, summary.stderr
    assert f"left of {budget:g}" in summary.stdout


def test_a_bad_policy_stops_client_run_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("site_id: site-001\nstudies: []\napprove_all: true\n")
    exchange = (tmp_path / "exchange").as_uri()
    done = fedsilo(
        "client", "run", "--site-id", "site-001", "--exchange", exchange,
        "--site-policy", str(bad), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip().startswith("error")]
    assert len(errors) == 1 and "approve_all: unknown key" in errors[0]

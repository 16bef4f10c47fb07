"""A federation over S3 (moto_server on 127.0.0.1): the aggregator and the hospitals are
separate OS processes (``fedsilo server run`` / ``fedsilo client run``), each hospital signing
its requests with an access key of its own AWS account."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import yaml

from fedsilo.engine.app import build_source
from fl_client.moments import publish_moments
from fl_core.config import load_config
from fl_core.exchange.ledger import verify_ledger
from fl_core.exchange.protocol import Exchange
from fl_core.serialisation import decode_weights

pytestmark = pytest.mark.slow


def _assert_closed_once(federation, rounds: int) -> None:
    """One result.json and one ledger entry per round (the bucket is versioned), chain intact."""
    for round_index in range(1, rounds + 2):
        key = f"rounds/{round_index:06d}/result.json"
        assert federation.versions(key) == 1, key
        assert federation.versions(f"ledger/{round_index:06d}.json") == 1, round_index
        assert federation.versions(f"rounds/{round_index:06d}/global.safetensors") == 1
    report = verify_ledger(federation.exchange)
    assert not report.problems, report.problems
    assert report.rounds_checked == rounds + 1


def test_simulate_runs_the_whole_federation_over_moto_server(make_federation, moto_server):
    federation = make_federation(rounds=2)
    config = federation.tmp / "simulate.yaml"
    config.write_text(
        yaml.safe_dump({**federation.settings, "federation_id": federation.federation_id})
    )
    out = federation.tmp / "runs"
    env = federation.env_for(None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedsilo.cli",
            "simulate",
            "--config",
            str(config),
            "--exchange",
            federation.uri,
            "--endpoint-url",
            moto_server,
            "--out",
            str(out),
            "--run-id",
            "s3",
            "--workers",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"exchange: {federation.uri}" in done.stdout
    rows = (out / "s3" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2
    for round_index in (1, 2):
        result = federation.result(round_index)
        assert result is not None and len(result.accepted) == 4 and not result.rejected
    model = decode_weights((out / "s3" / "model.safetensors").read_bytes())
    final = federation.final_model()
    assert model.keys() == final.keys()
    _assert_closed_once(federation, 2)


def test_separate_processes_each_hospital_in_its_own_account(reference_run):
    federation = reference_run
    rounds = federation.settings["rounds"]
    for round_index in range(1, rounds + 2):
        result = federation.result(round_index)
        assert result is not None
        assert sorted(d.site_id for d in result.accepted) == federation.hospitals
        assert not result.rejected and not result.missing
    _assert_closed_once(federation, rounds)
    accounts = {federation.keys[site].account_id for site in federation.hospitals}
    assert len(accounts) == len(federation.hospitals)
    for site in federation.hospitals:
        # moto attributes a request to the account that owns the signing key
        assert federation.key_last_used_service(site) == "s3", site
    state = federation.state()
    assert state is not None and state.phase == "done"


def test_aggregator_sigkilled_mid_round_resumes_from_s3(make_federation, reference_model):
    federation = make_federation()
    first, rest = federation.hospitals[:2], federation.hospitals[2:]
    # the late hospitals reported their feature moments before round 1, as in the reference
    # run; only their round-1 answers come after the crash
    config = load_config(federation.config_file())
    source = build_source(config)
    for site in rest:
        exchange = Exchange(federation.store_for(site), config.federation_id)
        publish_moments(exchange, source.load_site(site))
    server = federation.start_server()
    clients = federation.start_clients(first)

    def two_admitted():
        state = federation.state()
        if state is None or state.round_index != 1:
            return None
        accepted = [d for d in state.decisions.values() if d.status == "accepted"]
        return state if len(accepted) == 2 else None

    before = federation.wait_for("two admitted updates in round 1", two_admitted, watch=[server])
    server.kill()
    killed_unix = time.time()
    assert federation.result(1) is None, "round 1 must still be open when the aggregator dies"
    # the others answer while no aggregator runs; a new one takes over once the lease lapses
    clients.update(federation.start_clients(rest))
    restarted = federation.start_server(name="server-restarted")
    federation.run_to_end(restarted, clients)

    resumed = [e for e in restarted.events() if e.get("event") == "federation_resumed"]
    assert resumed and resumed[0]["round_index"] == 1
    result = federation.result(1)
    assert result is not None
    assert sorted(d.site_id for d in result.accepted) == federation.hospitals
    for site, decision in before.decisions.items():
        kept = next(d for d in result.accepted if d.site_id == site)
        # admitted before the crash, kept as it was (not admitted a second time)
        assert kept.sha256 == decision.sha256 and kept.decided_unix == decision.decided_unix
        assert kept.decided_unix < killed_unix
    _assert_closed_once(federation, federation.settings["rounds"])
    federation.assert_final_matches(reference_model)


def test_two_aggregators_exactly_one_advances(make_federation, reference_model):
    federation = make_federation()
    config = federation.config_file()
    first = federation.start_server(config=config, name="server-a")
    second = federation.start_server(config=config, name="server-b")
    clients = federation.start_clients()
    codes = {}
    for proc in (first, second):
        codes[proc.name] = proc.wait()
    assert sorted(codes.values()) == [0, 5], f"{codes}\n{federation.logs()}"
    winner, loser = (first, second) if codes["server-a"] == 0 else (second, first)
    for site, proc in clients.items():
        assert proc.wait() == 0, f"{site}\n{federation.logs()}"
    lines = [line for line in loser.stderr().splitlines() if line.strip()]
    assert len(lines) == 1, loser.stderr()
    assert "only one" in lines[0] and "Traceback" not in loser.stderr()
    assert not [e for e in loser.events() if e.get("event") == "round_closed"]
    closed = [e for e in winner.events() if e.get("event") == "round_closed"]
    assert len(closed) == federation.settings["rounds"] + 1
    _assert_closed_once(federation, federation.settings["rounds"])
    federation.assert_final_matches(reference_model)

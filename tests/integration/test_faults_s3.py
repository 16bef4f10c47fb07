"""Faults injected into a federation over S3: dead hospitals, flaky S3, hostile uploads, and
bad input at the command line. Every wait is bounded; nothing can hang the suite."""

from __future__ import annotations

import pickle
import secrets
import socket

import numpy as np
import pytest
import yaml

from fedsilo.testing.manifests import answer_to
from fl_core.admission import update_metadata
from fl_core.aggregation import weighted_mean
from fl_core.config import load_config
from fl_core.exchange.manifests import (
    EvaluationReport,
    GlobalManifest,
    ScoreHistogram,
    SparseCounts,
    UpdateManifest,
)
from fl_core.serialisation import decode_weights, encode_weights
from fl_server.aggregator import FedAvgAggregator
from fl_server.round_events import RoundEvents
from fl_server.round_loop import RoundLoop

pytestmark = pytest.mark.slow

VICTIM = "site-004"


def _kill_after_first_answer(federation, server, clients):
    """SIGKILL the victim hospital once its round-1 update is in S3 (while rounds go on)."""
    federation.wait_for(
        f"{VICTIM}'s round-1 update",
        lambda: VICTIM in federation.exchange.list_answered_sites(1),
        watch=[server],
    )
    clients.pop(VICTIM).kill()


def _round_missing_victim(federation):
    for round_index in range(1, federation.settings["rounds"] + 2):
        result = federation.result(round_index)
        if result is not None and result.missing == [VICTIM]:
            return result
    return None


# ---- a hospital dies mid-federation ---------------------------------------------------------


def test_hospital_killed_round_closes_at_deadline_with_quorum(make_federation):
    federation = make_federation(round={"deadline_s": 8.0, "min_sites": 2})
    server = federation.start_server()
    clients = federation.start_clients()
    _kill_after_first_answer(federation, server, clients)
    federation.run_to_end(server, clients)
    result = _round_missing_victim(federation)
    assert result is not None, federation.logs()
    assert sorted(d.site_id for d in result.accepted) == federation.hospitals[:3]
    assert result.closed_unix - result.started_unix >= 8.0 - 0.05  # closed by the deadline
    state = federation.state()
    assert state is not None and state.phase == "done"


def test_hospital_killed_below_quorum_fails_the_round(make_federation):
    federation = make_federation(round={"deadline_s": 10.0, "min_sites": 4, "below_quorum": "fail"})
    server = federation.start_server()
    clients = federation.start_clients()
    _kill_after_first_answer(federation, server, clients)
    rc = server.wait()
    assert rc == 6, federation.logs()  # RoundFailedError
    lines = [line for line in server.stderr().splitlines() if line.strip()]
    assert len(lines) == 1 and "below quorum" in lines[0], server.stderr()
    assert "Traceback" not in server.stderr()
    state = federation.state()
    assert state is not None and state.phase == "failed"
    assert state.message is not None and "round.min_sites is 4" in state.message


def test_hospital_killed_below_quorum_extends_and_says_so(make_federation):
    federation = make_federation(
        round={
            "deadline_s": 10.0,  # hospitals must start (import torch) within it on a loaded box
            "min_sites": 4,
            "below_quorum": "extend",
            "extend_s": 60.0,
            "max_extensions": 2,
        }
    )
    server = federation.start_server()
    clients = federation.start_clients()
    _kill_after_first_answer(federation, server, clients)

    def extended():
        state = federation.state()
        return state if state is not None and state.extensions >= 1 else None

    state = federation.wait_for("the round to be extended", extended, watch=[server])
    # the hospital comes back during the extension; the round then closes with everyone
    clients[VICTIM] = federation.start_client(VICTIM)
    federation.run_to_end(server, clients)
    said = [
        e
        for e in server.events()
        if e.get("event") == "round_extended" and e["round_index"] == state.round_index
    ]
    assert said and said[0]["min_sites"] == 4 and said[0]["accepted"] == 3, server.events()
    result = federation.result(state.round_index)
    assert result is not None and result.extensions >= 1
    assert sorted(d.site_id for d in result.accepted) == federation.hospitals


# ---- flaky S3 ---------------------------------------------------------------------------------


def test_transient_s3_errors_are_retried(make_federation, fault_proxy, reference_model):
    federation = make_federation()
    server_proxy = fault_proxy(every=4, max_faults=40)
    client_proxy = fault_proxy(every=2, max_faults=40)  # a hospital makes few requests
    server = federation.start_server(config=federation.config_file(endpoint=server_proxy.url))
    flaky = federation.hospitals[0]
    clients = {
        flaky: federation.start_client(flaky, federation.config_file(endpoint=client_proxy.url))
    }
    clients.update(federation.start_clients(federation.hospitals[1:]))
    federation.run_to_end(server, clients)
    for proxy in (server_proxy, client_proxy):
        injected = proxy.injected
        assert injected["slow_down"] > 0 and injected["reset_before"] > 0, injected
        assert injected["reset_after"] > 0, injected
        assert sum(injected.values()) >= 5, injected
    assert server_proxy.injected["cut_body"] > 0, server_proxy.injected
    for round_index in range(1, federation.settings["rounds"] + 2):
        result = federation.result(round_index)
        assert result is not None and len(result.accepted) == 4 and not result.rejected
    federation.assert_final_matches(reference_model)


# ---- a hostile or broken hospital ---------------------------------------------------------------

MAX_UPDATE_BYTES = 1_000_000
HOSTILE_ROUND_1 = {
    "bad-1": "site_mismatch",  # manifest names another site
    "bad-2": "stale_round",
    "bad-3": "site_mismatch",  # site-001's file of this round, bound to site-001
    "bad-4": "malformed_tensors",  # truncated
    "bad-5": "wrong_tensors",  # extra tensor
    "bad-6": "wrong_tensors",  # missing tensor
    "bad-7": "wrong_dtype",
    # NaN and Inf are found while the update is summed, after every admission check, and these
    # sites registered no training rows, which admission refuses first (tests/fl_server has
    # the NaN/Inf rejections themselves)
    "bad-8": "num_examples_unregistered",  # NaN
    "bad-9": "too_large",
    "bad-10": "missing_tensors",  # a manifest alone in a training round
    "bad-11": "wrong_shape",
    "bad-12": "malformed_manifest",
    "bad-13": "malformed_tensors",  # a pickle, never unpickled
    "bad-14": "num_examples_unregistered",  # Inf
    "bad-15": "stale_round",
}
HOSTILE_ROUND_2 = {
    **HOSTILE_ROUND_1,
    "bad-3": "site_mismatch",  # site-001's round-1 bytes again: they name site-001, round 1
    "bad-15": "replayed",  # site-002's round-1 nonce again
}
BAD_SITES = list(HOSTILE_ROUND_1)
"""Invited; ``stranger`` is not, so its answer names nobody: a foreign key, not a decision."""


def _signed(weights, update: UpdateManifest) -> bytes:
    """A training answer as a hospital writes it: the weights, its manifest inside."""
    return encode_weights(weights, update_metadata(update))


def _write_hostile(federation, manifest: GlobalManifest) -> None:
    """Each bad site writes its bad answer through its own account's S3 client."""
    r = manifest.round_index
    layout = federation.exchange.layout
    honest_store = federation.store
    if manifest.task != "train":
        for site in [*BAD_SITES, "stranger"]:
            store = federation.store_for(site if site != "stranger" else "bad-15")
            store.put_new(layout.update_manifest_key(r, site), b"{not json")
        return
    base = {
        k: np.asarray(v) + np.float32(0.25)
        for k, v in decode_weights(federation.exchange.read_global_weights(manifest)).items()
    }
    names = sorted(base)

    def put(site, weights=None, tamper=None, raw=None, manifest_site=None, nonce=None, **changes):
        nonce = nonce or secrets.token_hex(16)
        update = answer_to(manifest, manifest_site or site, nonce=nonce, **changes)
        data = raw if raw is not None else _signed(weights or base, update)
        if tamper is not None:
            data = tamper(data)
        store = federation.store_for(site if site != "stranger" else "bad-15")
        store.put_new(layout.update_weights_key(r, site), data)

    # the uninvited site first: the round closes once every invited site answered, so a
    # stranger written last could miss it
    put("stranger")
    put("bad-1", manifest_site="site-002")
    put("bad-2", round_index=r + 1)
    if r == 1:
        put("bad-3", raw=honest_store.get(layout.update_weights_key(1, "site-001")))
        put("bad-15", round_index=r + 5)
    else:
        first = honest_store.get(layout.update_weights_key(1, "site-001"))
        put("bad-3", raw=first)
        old = UpdateManifest.model_validate_json(
            federation.exchange.read_update_manifest_bytes(1, "site-002")
        )
        put("bad-15", nonce=old.nonce)
    put("bad-4", tamper=lambda d: d[:-7])
    put("bad-5", weights={**base, "evil": np.ones(3, np.float32)})
    put("bad-6", weights={k: base[k] for k in names[:-1]})
    put("bad-7", weights={k: v.astype(np.float64) for k, v in base.items()})
    nan = {k: v.copy() for k, v in base.items()}
    nan[names[0]].flat[0] = np.nan
    put("bad-8", weights=nan)
    inf = {k: v.copy() for k, v in base.items()}
    inf[names[-1]].flat[-1] = np.inf
    put("bad-14", weights=inf)
    put("bad-9", weights={**base, "pad": np.zeros(MAX_UPDATE_BYTES // 4 + 10, np.float32)})
    lone = answer_to(manifest, "bad-10").model_dump_json().encode()
    federation.store_for("bad-10").put_new(layout.update_manifest_key(r, "bad-10"), lone)
    wrong = {k: v.copy() for k, v in base.items()}
    wrong[names[0]] = np.zeros((*wrong[names[0]].shape, 2), np.float32)
    put("bad-11", weights=wrong)
    federation.store_for("bad-12").put_new(layout.update_manifest_key(r, "bad-12"), b"{not json")
    put("bad-13", raw=pickle.dumps({"w": [1.0]}))


def test_hostile_hospitals_rejected_with_reasons_model_unaffected(make_federation, reference_model):
    # the hostile sites send no feature moments: the server waits out one deadline for them
    federation = make_federation(
        admission={"max_update_bytes": MAX_UPDATE_BYTES}, round={"deadline_s": 20.0}
    )
    honest = federation.hospitals
    server = federation.start_server(sites=honest + BAD_SITES)
    clients = federation.start_clients()
    rounds = federation.settings["rounds"]
    for round_index in range(1, rounds + 2):
        manifest = federation.wait_for(
            f"global model of round {round_index}",
            lambda r=round_index: federation.global_manifest(r),
            watch=[server],
        )
        # the honest answers first, so that copies of them can be made
        federation.wait_for(
            f"honest answers of round {round_index}",
            lambda r=round_index: set(honest) <= set(federation.exchange.list_answered_sites(r)),
            watch=[server],
        )
        _write_hostile(federation, manifest)
    federation.run_to_end(server, clients)

    logged = {
        (e["round_index"], e["site_id"]): e["reason"]
        for e in server.events()
        if e.get("event") == "update_rejected"
    }
    for round_index, expected in ((1, HOSTILE_ROUND_1), (2, HOSTILE_ROUND_2)):
        result = federation.result(round_index)
        assert result is not None
        reasons = {d.site_id: d.reason for d in result.rejected}
        assert reasons == expected, round_index
        assert sorted(d.site_id for d in result.accepted) == honest
        stranger = federation.exchange.layout.update_weights_key(round_index, "stranger")
        assert (result.foreign_keys, result.foreign_key_samples) == (1, [stranger])
        for site, reason in expected.items():
            assert logged[(round_index, site)] == reason, (round_index, site)
        # the next global model is FedAvg of the honest updates alone
        updates = []
        for site in honest:
            data = federation.exchange.read_update_weights(round_index, site)
            kept = next(d for d in result.accepted if d.site_id == site)
            updates.append((decode_weights(data), kept.num_examples))
        following = federation.global_manifest(round_index + 1)
        got = decode_weights(federation.exchange.read_global_weights(following))
        for name, value in weighted_mean(updates).items():
            np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-7)
    evaluation = federation.result(rounds + 1)
    assert evaluation is not None
    assert {d.reason for d in evaluation.rejected} == {"malformed_manifest"}
    federation.assert_final_matches(reference_model)


class _Rogue(RoundEvents):
    """Honest answers for two sites; a third writes with plain boto3, without fedsilo's
    SHA-256 checksum or ``x-amz-meta-sha256`` (as any hospital holding its own credentials
    can)."""

    def __init__(self, federation, s3_client) -> None:
        self.federation = federation
        self.s3 = s3_client

    def round_opened(self, manifest: GlobalManifest) -> None:
        exchange = self.federation.exchange
        bins = 10
        report = EvaluationReport(
            num_examples=12,
            loss_sum=1.0,
            histogram=ScoreHistogram(
                bins=bins,
                positives=SparseCounts(index=[7], count=[2]),
                negatives=SparseCounts(index=[2], count=[10]),
            ),
        )
        global_weights = decode_weights(exchange.read_global_weights(manifest))
        for index, site in enumerate(("site-001", "site-002", "site-003")):
            update = answer_to(manifest, site, evaluation=report)
            data = None
            if manifest.task == "train":
                weights = {k: v + np.float32(index) for k, v in global_weights.items()}
                data = _signed(weights, update)
            if site != "site-003":
                exchange.write_update(update, data)
                continue
            layout = exchange.layout
            prefix = f"{self.federation.prefix}/"
            if data is not None:
                key = prefix + layout.update_weights_key(manifest.round_index, site)
                self.s3.put_object(Bucket=self.federation.bucket, Key=key, Body=data)
            else:
                key = prefix + layout.update_manifest_key(manifest.round_index, site)
                body = update.model_dump_json().encode()
                self.s3.put_object(Bucket=self.federation.bucket, Key=key, Body=body)


def test_update_without_fedsilo_metadata_is_rejected_not_fatal(make_federation):
    federation = make_federation()
    config = load_config(
        overrides={
            "federation_id": federation.federation_id,
            "rounds": 1,
            "evaluation.histogram_bins": 10,
            "round.min_sites": 2,
            "round.deadline_s": 5.0,
            "round.poll_interval_s": 0.1,
            "data.synthetic.hospitals": 4,
        }
    )
    rogue_s3 = federation.store_for("site-003").client
    initial = {"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float32)}
    loop = RoundLoop(
        federation.exchange,
        FedAvgAggregator(),
        config,
        ["site-001", "site-002", "site-003"],
        initial_weights=initial,
        events=_Rogue(federation, rogue_s3),
    )
    loop.run()
    result = federation.result(1)
    assert result is not None
    # no SHA-256 checksum stored by S3 (plain boto3 sends none): refused before anything else
    assert [(d.site_id, d.reason) for d in result.rejected] == [("site-003", "missing_checksum")]


# ---- bad input at the command line --------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cli_edge_faults_exit_nonzero_with_one_line(make_federation, moto_server):
    """A missing bucket, an endpoint that does not answer, no credentials: server run and
    client run each exit non-zero with one line naming the fault, and no traceback."""
    federation = make_federation()
    dead_endpoint = f"http://127.0.0.1:{_free_port()}"
    cases = {
        "no-bucket": ("s3://fedsilo-it-no-such-bucket/x", moto_server, True, "does not exist"),
        "no-endpoint": (federation.uri, dead_endpoint, True, "did not answer"),
        "no-credentials": (federation.uri, moto_server, False, "no AWS credentials"),
    }
    procs = {}
    for name, (uri, endpoint, credentials, _needle) in cases.items():
        settings = {
            **federation.settings,
            "federation_id": federation.federation_id,
            "exchange": {"uri": uri, "endpoint_url": endpoint},
        }
        config = federation.tmp / f"{name}.yaml"
        config.write_text(yaml.safe_dump(settings))
        env = federation.env_for(None)
        if not credentials:
            env.pop("AWS_ACCESS_KEY_ID")
            env.pop("AWS_SECRET_ACCESS_KEY")
        for command in (["server", "run"], ["client", "run", "--site-id", "site-001"]):
            args = [*command, "--config", str(config)]
            procs[(name, command[0])] = federation.spawn(f"{name}-{command[0]}", args, env)
    for (name, command), proc in procs.items():
        rc = proc.wait(timeout_s=170)
        needle = cases[name][3]
        err = proc.stderr()
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc not in (0, None), f"{name} {command}: exit {rc}\n{proc.tail()}"
        assert "Traceback" not in err, f"{name} {command}\n{err}"
        assert len(lines) == 1 and needle in lines[0], f"{name} {command}\n{err}"
        assert lines[0].startswith("error:"), lines[0]

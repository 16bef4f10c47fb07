"""The round loop against a real local-directory exchange, with hospitals scripted by hooks.

Honest and hostile answers are written when a round opens (``round_opened``) or while the
aggregator waits (a fake ``sleep`` that advances a fake clock), so each fault is exact and no
test waits on wall time.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fl_core.errors import FederationLockedError, RoundFailedError
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import (
    MANIFEST_METADATA_KEY,
    GlobalManifest,
    UpdateManifest,
)
from fl_core.exchange.protocol import Exchange
from fl_core.serialisation import encode_weights
from fl_server.aggregator import FedAvgAggregator
from fl_server.round_loop import RoundLoop
from tests.fl_server._round_harness import (
    BINS,
    INITIAL,
    SITES,
    Crash,
    FakeTime,
    Script,
    answer,
    evaluation,
    expected_model,
    final_model,
    honest_weights,
    make_config,
    manifest_for,
    run_loop,
    signed,
)


def test_clean_round_is_fedavg_and_writes_layout(tmp_path):
    config = make_config()
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")
    state, exchange = run_loop(tmp_path, config, Script(exchange, SITES))
    assert state.phase == "done"
    model = final_model(exchange, config)
    for name, value in expected_model(SITES).items():
        np.testing.assert_allclose(model[name], value, rtol=1e-6)
    root = tmp_path / "exchange" / "federations" / "test"
    for rel in (
        "state.json",
        "rounds/000001/global.safetensors",
        "rounds/000001/global.json",
        "rounds/000001/updates/site-a.safetensors",  # a training answer: one file
        "rounds/000002/updates/site-a.json",  # an evaluation answer: the manifest alone
        "rounds/000001/result.json",
        "ledger/000001.json",
        "ledger/000002.json",
        "rounds/000002/global.json",
    ):
        assert (root / rel).is_file(), rel
    assert not (root / "rounds/000001/updates/site-a.json").exists()
    result = exchange.read_result(1)
    assert [d.site_id for d in result.accepted] == SITES
    assert result.evaluation is not None and result.evaluation.auroc == 1.0
    ledger2 = exchange.read_ledger_entry(2)
    assert ledger2.prev_hash == exchange.read_ledger_entry(1).entry_hash


def _hostile_writes(exchange: Exchange, manifest: GlobalManifest) -> None:
    """Every kind of bad answer a hostile hospital writes, each under its own (invited) site key."""
    layout = exchange.layout
    store = exchange.store
    r = manifest.round_index
    if manifest.task != "train":
        return
    base = honest_weights("site-a", 99)

    def put(
        site: str,
        weights: dict | None = None,
        tamper=None,
        raw: bytes | None = None,
        manifest_site: str | None = None,
        **changes,
    ) -> None:
        update = manifest_for(manifest, manifest_site or site, **changes)
        data = raw if raw is not None else signed(weights or base, update)
        if tamper is not None:
            data = tamper(data)
        store.put_new(layout.update_weights_key(r, site), data)

    put("bad-1", manifest_site="site-b")  # an update for another site's key
    put("bad-2", round_index=r + 1)  # stale round
    # a copy of site-a's bytes (already written this round) under bad-3's own manifest
    put("bad-3", raw=store.get(layout.update_weights_key(r, "site-a")))
    put("bad-4", tamper=lambda d: d[:-7])  # truncated
    put("bad-5", weights={**base, "evil": np.ones(3, np.float32)})  # extra tensor
    put("bad-6", weights={"w": base["w"]})  # missing tensor
    put("bad-7", weights={k: v.astype(np.float64) for k, v in base.items()})  # wrong dtype
    nan = {k: v.copy() for k, v in base.items()}
    nan["w"][0, 0] = np.nan
    put("bad-8", weights=nan)  # NaN
    inf = {k: v.copy() for k, v in base.items()}
    inf["b"][1] = np.inf
    put("bad-14", weights=inf)  # Inf
    late = {k: v.copy() for k, v in base.items()}
    late[sorted(late)[-1]].reshape(-1)[-1] = np.nan
    put("bad-16", weights=late)  # NaN in the very last value the file holds
    put("bad-9", weights={"w": base["w"], "b": np.zeros(2000, np.float32)})  # over the limit
    # a manifest alone in a training round: the tensors never came
    lone = manifest_for(manifest, "bad-10").model_dump_json().encode()
    store.put_new(layout.update_manifest_key(r, "bad-10"), lone)
    put("bad-15", raw=encode_weights(base))  # tensors without the manifest inside
    put("bad-11", weights={"w": np.zeros((2, 3), np.float32), "b": base["b"]})  # wrong shape
    put("stranger")  # not invited at all
    store.put_new(layout.update_manifest_key(r, "bad-12"), b"{not json")  # malformed manifest
    import pickle

    put("bad-13", raw=pickle.dumps({"w": [1.0]}))  # pickle instead of safetensors


EXPECTED_REASONS = {
    "bad-1": "site_mismatch",
    "bad-2": "stale_round",
    "bad-3": "site_mismatch",
    "bad-4": "malformed_tensors",
    "bad-5": "wrong_tensors",
    "bad-6": "wrong_tensors",
    "bad-7": "wrong_dtype",
    "bad-8": "non_finite",
    "bad-14": "non_finite",
    "bad-16": "non_finite",
    "bad-9": "too_large",
    "bad-10": "missing_tensors",
    "bad-15": "malformed_manifest",
    "bad-11": "wrong_shape",
    "bad-12": "malformed_manifest",
    "bad-13": "malformed_tensors",
}


def round_2_rejections(tmp_path: Path, on_open) -> dict[str, str]:
    """Run two rounds in which ``on_open`` may write as site-e; round 2's rejections."""
    config = make_config(rounds=2)
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")
    script = Script(exchange, SITES, on_open=on_open)
    _state, exchange = run_loop(tmp_path, config, script, sites=[*SITES, "site-e"])
    return {d.site_id: d.reason for d in exchange.read_result(2).rejected}


def test_replays_from_earlier_rounds_rejected(tmp_path):
    first_round: dict[str, object] = {}

    def replay(exchange: Exchange, manifest: GlobalManifest) -> None:
        layout, store = exchange.layout, exchange.store
        if manifest.round_index == 1:
            first_round["bytes"] = store.get(layout.update_weights_key(1, "site-a"))
            return
        if manifest.round_index != 2:
            return
        # site-a's accepted round-1 file, byte for byte, sent again in round 2: its manifest
        # names site-a and round 1, and both are inside the bytes the ledger hashed
        store.put_new(layout.update_weights_key(2, "site-e"), first_round["bytes"])

    assert round_2_rejections(tmp_path, replay) == {"site-e": "site_mismatch"}


def test_reused_nonce_from_earlier_round_rejected(tmp_path):
    nonces: dict[int, str] = {}

    def reuse(exchange: Exchange, manifest: GlobalManifest) -> None:
        if manifest.round_index == 1:
            nonces[1] = UpdateManifest.model_validate_json(
                exchange.read_update_manifest_bytes(1, "site-b")
            ).nonce
        elif manifest.round_index == 2:
            update = manifest_for(manifest, "site-e", nonce=nonces[1])
            exchange.write_update(update, signed(honest_weights("site-e", 2), update))

    assert round_2_rejections(tmp_path, reuse) == {"site-e": "replayed"}


def test_hostile_updates_rejected_with_reasons_and_model_unaffected(tmp_path):
    invited = SITES + list(EXPECTED_REASONS)
    size_limit = len(encode_weights(honest_weights("site-a", 1))) + 3000  # and the manifest
    config = make_config(**{"admission.max_update_bytes": size_limit})
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")
    script = Script(exchange, SITES, on_open=_hostile_writes)
    fake = FakeTime()
    _state, exchange = run_loop(tmp_path, config, script, fake=fake, sites=invited)
    result = exchange.read_result(1)
    reasons = {d.site_id: d.reason for d in result.rejected}
    assert reasons == EXPECTED_REASONS
    assert sorted(d.site_id for d in result.accepted) == sorted(SITES)
    # an answer of a site that was not invited names nobody: a foreign key, not a decision
    assert result.foreign_keys == 1
    assert result.foreign_key_samples == [exchange.layout.update_weights_key(1, "stranger")]
    model = final_model(exchange, config)
    for name, value in expected_model(SITES).items():
        np.testing.assert_allclose(model[name], value, rtol=1e-6)
    ledger = exchange.read_ledger_entry(1)
    assert ("bad-8", "non_finite") in [tuple(x) for x in ledger.rejected]
    details = {d.site_id: d.detail for d in result.rejected}
    assert "site-a" in details["bad-3"] and "NaN or Inf" in details["bad-14"]


def _bad_histogram_writes(exchange: Exchange, manifest: GlobalManifest) -> None:
    """Evaluation histograms of the wrong size, or still in the old dense form."""
    if manifest.task != "train":
        return
    r = manifest.round_index
    wrong = evaluation("bad-bins", bins=BINS + 5)
    reference = evaluation("bad-reference").model_copy(
        update={"reference": {"apache": wrong.histogram}}
    )
    for site, report in (("bad-bins", wrong), ("bad-reference", reference), ("old-dense", None)):
        update = manifest_for(manifest, site, evaluation=report)
        document = update.model_dump(mode="json")
        if report is None:  # the dense lists manifests carried before they were sparse
            document["evaluation"] = {
                "num_examples": 2,
                "loss_sum": 1.0,
                "histogram": {"positives": [0] * 7 + [2] + [0] * 2, "negatives": [0] * BINS},
            }
        metadata = {MANIFEST_METADATA_KEY: json.dumps(document)}
        data = encode_weights(honest_weights(site, r), metadata)
        exchange.store.put_new(exchange.layout.update_weights_key(r, site), data)


def test_histograms_of_the_wrong_size_or_form_are_malformed(tmp_path):
    config = make_config()
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")
    script = Script(exchange, SITES, on_open=_bad_histogram_writes)
    bad = ["bad-bins", "bad-reference", "old-dense"]
    _state, exchange = run_loop(tmp_path, config, script, sites=SITES + bad)
    result = exchange.read_result(1)
    reasons = {d.site_id: d.reason for d in result.rejected}
    assert reasons == dict.fromkeys(bad, "malformed_manifest")
    details = {d.site_id: d.detail for d in result.rejected}
    assert details["bad-bins"] == f"histogram has {BINS + 5} bins, expected {BINS}"
    assert details["bad-reference"] == (
        f"reference 'apache' histogram has {BINS + 5} bins, expected {BINS}"
    )
    assert details["old-dense"].startswith("evaluation.histogram.")
    # the round closes on the honest hospitals' histograms alone
    assert result.evaluation is not None and result.evaluation.num_sites == len(SITES)
    assert result.evaluation.auroc == 1.0


def test_deadline_closes_with_quorum_and_records_missing(tmp_path):
    config = make_config()
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")
    script = Script(exchange, ["site-a", "site-b"])  # c and d never answer
    _state, exchange = run_loop(tmp_path, config, script)
    result = exchange.read_result(1)
    assert result.missing == ["site-c", "site-d"]
    model = final_model(exchange, config)
    for name, value in expected_model(["site-a", "site-b"]).items():
        np.testing.assert_allclose(model[name], value, rtol=1e-6)


def test_below_quorum_fail_policy_fails_cleanly(tmp_path):
    config = make_config(**{"round.min_sites": 3, "round.below_quorum": "fail"})
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")
    with pytest.raises(RoundFailedError, match="below quorum: 2 accepted updates"):
        run_loop(tmp_path, config, Script(exchange, ["site-a", "site-b"]))
    state, _ = exchange.read_state()
    assert state.phase == "failed"
    # a restart does not hang either: it reports the failure again
    with pytest.raises(RoundFailedError):
        run_loop(tmp_path, config, Script(exchange, []), owner="agg-2")


def test_below_quorum_extend_policy_waits_for_a_late_site(tmp_path):
    config = make_config(**{"round.min_sites": 3, "round.extend_s": 50.0})
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")
    fake = FakeTime()
    start = fake.now

    def late_site():
        state, _ = exchange.read_state()
        r = state.round_index
        answered = "site-c" in exchange.list_answered_sites(r)
        if fake.now > start + 120 and not answered:
            answer(exchange, exchange.read_global_manifest(r), "site-c")

    fake.on_sleep = late_site
    _state, exchange = run_loop(tmp_path, config, Script(exchange, ["site-a", "site-b"]), fake=fake)
    result = exchange.read_result(1)
    assert result.extensions >= 1
    assert sorted(d.site_id for d in result.accepted) == ["site-a", "site-b", "site-c"]


def test_extend_policy_gives_up_after_max_extensions(tmp_path):
    config = make_config(**{"round.min_sites": 3, "round.max_extensions": 2})
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")
    with pytest.raises(RoundFailedError, match="2 extensions"):
        run_loop(tmp_path, config, Script(exchange, ["site-a", "site-b"]))


@pytest.mark.parametrize("checkpoint_s", [0.0, 60.0])
def test_crash_mid_round_resumes_without_losing_admitted_updates(tmp_path, checkpoint_s):
    """Decisions checkpointed before the crash are replayed; later ones are admitted again."""
    config = make_config(rounds=2, **{"round.checkpoint_interval_s": checkpoint_s})
    # uninterrupted reference run
    ref_dir = tmp_path / "ref"
    ref_exchange = Exchange(LocalDirectoryStore(ref_dir / "exchange"), "test")
    _, ref_exchange = run_loop(ref_dir, config, Script(ref_exchange, SITES))
    reference = final_model(ref_exchange, config)

    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")
    fake = FakeTime()
    early = ["site-a", "site-b"]

    def crash_once():
        raise Crash()

    fake.on_sleep = crash_once
    script = Script(exchange, early)
    with pytest.raises(Crash):
        run_loop(tmp_path, config, script, fake=fake)
    state, _ = exchange.read_state()
    # every batch checkpointed, or none yet: the crash came before the interval was up
    assert sorted(state.decisions) == (early if checkpoint_s == 0 else [])

    # the late sites answer while no aggregator runs; a new aggregator resumes
    manifest = exchange.read_global_manifest(1)
    for site in ["site-c", "site-d"]:
        answer(exchange, manifest, site)
    fake.on_sleep = None
    resumed = Script(exchange, SITES)
    state, exchange = run_loop(tmp_path, config, resumed, fake=fake, owner="agg-2")
    assert state.phase == "done"
    result = exchange.read_result(1)
    assert sorted(d.site_id for d in result.accepted) == SITES
    model = final_model(exchange, config)
    for name in reference:
        np.testing.assert_allclose(model[name], reference[name], rtol=1e-6)
    assert [r.round_index for r in resumed.closed] == [1, 2, 3]  # no round closed twice


def test_crash_after_result_before_state_does_not_aggregate_twice(tmp_path):
    config = make_config()
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")

    class CrashOnClose(Script):
        def round_closed(self, result):
            raise Crash()

    with pytest.raises(Crash):
        run_loop(tmp_path, config, CrashOnClose(exchange, SITES))
    first = exchange.read_result(1)
    _state, exchange = run_loop(tmp_path, config, Script(exchange, SITES), owner="agg-2")
    assert exchange.read_result(1) == first
    model = final_model(exchange, config)
    for name, value in expected_model(SITES).items():
        np.testing.assert_allclose(model[name], value, rtol=1e-6)


def test_second_aggregator_exits_while_first_holds_the_lease(tmp_path):
    config = make_config(**{"round.poll_interval_s": 0.02, "round.lease_s": 0.6})
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")
    first = RoundLoop(
        exchange,
        FedAvgAggregator(),
        config,
        SITES,
        initial_weights=INITIAL,
        events=Script(exchange, ["site-a", "site-b"]),
        owner_id="first",
    )
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _run_catching(first, errors))
    thread.start()
    while exchange.read_state() is None:
        time.sleep(0.01)
    second = RoundLoop(
        exchange, FedAvgAggregator(), config, SITES, initial_weights=INITIAL, owner_id="second"
    )
    with pytest.raises(FederationLockedError, match="only one may run"):
        second.run()
    for site in ["site-c", "site-d"]:
        answer(exchange, exchange.read_global_manifest(1), site)
    manifest = None
    while manifest is None:
        manifest = exchange.read_global_manifest(2)
        time.sleep(0.01)
    for site in ["site-c", "site-d"]:
        answer(exchange, manifest, site)
    thread.join(timeout=20)
    assert not errors
    assert exchange.read_state()[0].phase == "done"
    assert exchange.read_state()[0].owner_id == "first"


def _run_catching(loop: RoundLoop, errors: list[BaseException]) -> None:
    try:
        loop.run()
    except BaseException as err:
        errors.append(err)


def test_result_json_is_readable_by_people(tmp_path):
    config = make_config()
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")
    run_loop(tmp_path, config, Script(exchange, SITES))
    raw = json.loads((tmp_path / "exchange/federations/test/rounds/000001/result.json").read_text())
    assert raw["accepted"][0]["site_id"] == "site-a"
    assert raw["evaluation"]["auroc"] == 1.0


def test_revoked_site_refused_from_the_next_admission(tmp_path):
    from fl_core.exchange.manifests import Registration

    config = make_config()
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")
    fake = FakeTime()

    class RevokeThenAnswer(Script):
        def round_opened(self, manifest):
            super().round_opened(manifest)
            if manifest.round_index == 1:
                self.exchange.write_registration(
                    Registration(site_id="site-d", joined_unix=0.0, status="revoked"), None
                )
                answer(self.exchange, manifest, "site-d")

    script = RevokeThenAnswer(exchange, ["site-a", "site-b", "site-c"])
    run_loop(tmp_path, config, script, fake=fake)
    reasons = {d.site_id: d.reason for d in exchange.read_result(1).rejected}
    assert reasons == {"site-d": "revoked_site"}

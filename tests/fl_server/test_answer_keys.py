"""A listed key is an answer only where it equals an invited site's canonical name.

A hospital may write anything under ``updates/{site_id}.*``; keys it plants there that end
like another hospital's answer must neither name that hospital nor slow the round down.
"""

from __future__ import annotations

from fedsilo.ops.status import collect_status, status_title
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.layout import ExchangeLayout
from fl_core.exchange.manifests import GlobalManifest
from fl_core.exchange.protocol import Exchange
from fl_server.answer_keys import FOREIGN_KEY_SAMPLES, RoundKeys
from fl_server.round_events import RoundEvents
from tests.fl_server._round_harness import (
    INITIAL,
    SITES,
    FakeTime,
    answer,
    final_model,
    make_config,
    run_loop,
)

LAYOUT = ExchangeLayout("test")


def planted(round_index: int) -> list[str]:
    """Keys site-a may write (they are under ``site-a.*``) that end like site-b's answer."""
    prefix = LAYOUT.updates_prefix(round_index)
    return [
        f"{prefix}site-a.x/site-b.json",
        f"{prefix}site-a.x/site-b.safetensors",
        f"{prefix}site-a.secagg-advert.json/../site-b.json",
    ]


def test_canonical_names_are_exactly_the_invited_sites_answers_and_documents() -> None:
    keys = LAYOUT.canonical_update_keys(3, ["site-a", "site-b"])
    prefix = LAYOUT.updates_prefix(3)
    assert keys[f"{prefix}site-b.safetensors"] == ("site-b", "weights")
    assert keys[f"{prefix}site-b.json"] == ("site-b", "manifest")
    assert keys[f"{prefix}site-a.secagg-answer.json"] == ("site-a", "secagg")
    assert len(keys) == 8
    assert not set(planted(3)) & set(keys)


def test_no_key_grammar_reads_a_site_out_of_the_last_segment() -> None:
    for key in planted(1):
        assert LAYOUT.site_of_update_key(key) is None
    assert LAYOUT.site_of_update_key(f"{LAYOUT.updates_prefix(1)}site-b.json") == (
        "site-b",
        "json",
    )
    foreign_report = f"{LAYOUT.preflight_prefix()}site-a.x/site-b.preflight-1.json"
    assert LAYOUT.site_of_preflight_key(foreign_report) is None
    assert not LAYOUT.is_preflight_key_of(foreign_report, "site-b")
    own_report = LAYOUT.preflight_key("site-b", "1")
    assert LAYOUT.site_of_preflight_key(own_report) == "site-b"
    assert LAYOUT.is_preflight_key_of(own_report, "site-b")
    assert LAYOUT.site_of_preflight_key(f"elsewhere/{own_report}") is None


def test_round_keys_count_junk_once_and_keep_a_few_samples() -> None:
    keys = RoundKeys(LAYOUT, 1, ["site-a", "site-b"])
    prefix = LAYOUT.updates_prefix(1)
    junk = [f"{prefix}site-a.junk-{i:05d}" for i in range(5000)]
    answers = [f"{prefix}site-b.json", f"{prefix}site-a.safetensors"]
    assert keys.classify([*planted(1), *junk]) == ([], [*planted(1), *junk])
    assert keys.foreign_count == 5003
    assert len(keys.foreign_samples) == FOREIGN_KEY_SAMPLES
    # the next polls: junk already classified is neither counted nor logged again
    assert keys.classify([*planted(1), *junk, *answers]) == (["site-b", "site-a"], [])
    assert keys.classify([*planted(1), *junk, *answers]) == ([], [])
    assert keys.foreign_count == 5003
    secagg = RoundKeys(LAYOUT, 1, ["site-a"])
    assert secagg.classify([LAYOUT.secagg_update_key(1, "site-a", "advert")]) == ([], [])
    assert secagg.foreign_count == 0  # its own document, not an answer and not foreign


def test_the_exchange_names_answers_by_exact_key_only(tmp_path) -> None:
    exchange = Exchange(LocalDirectoryStore(tmp_path), "test")
    for key in planted(1):
        if ".." not in key.split("/"):  # the store refuses to write such a key at all
            exchange.store.put_new(key, b"{}")
    assert exchange.list_answered_sites(1, ["site-a", "site-b"]) == []
    exchange.store.put_new(LAYOUT.update_manifest_key(1, "site-b"), b"{}")
    assert exchange.list_answered_sites(1, ["site-a", "site-b"]) == ["site-b"]
    assert exchange.list_answered_sites(1, ["site-a"]) == []  # site-b was not invited


class PlantingHospitals(RoundEvents):
    """site-a plants keys for every round before round 1 opens; site-b answers late.

    site-b writes its answer only once the aggregator has polled and slept, so at the first
    poll of every round the only keys ending in ``site-b.*`` are site-a's.
    """

    def __init__(self, exchange: Exchange, fake: FakeTime, rounds: int) -> None:
        self.exchange = exchange
        self.rounds = rounds
        self.open: GlobalManifest | None = None
        fake.on_sleep = self.late_answer

    def round_opened(self, manifest: GlobalManifest) -> None:
        if manifest.round_index == 1:
            for round_index in range(1, self.rounds + 2):
                for key in planted(round_index)[:2]:
                    self.exchange.store.put_new(key, b'{"site_id": "site-b"}')
        self.open = manifest
        for site in SITES:
            if site != "site-b":
                answer(self.exchange, manifest, site)

    def late_answer(self) -> None:
        manifest = self.open
        if manifest is None:
            return
        key = self.exchange.layout.update_manifest_key(manifest.round_index, "site-b")
        if manifest.task == "train":
            key = self.exchange.layout.update_weights_key(manifest.round_index, "site-b")
        if not self.exchange.store.exists(key):
            answer(self.exchange, manifest, "site-b")


def test_keys_planted_for_future_rounds_never_reject_the_site_they_imitate(tmp_path) -> None:
    rounds = 3
    config = make_config(rounds=rounds)
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")
    fake = FakeTime()
    hospitals = PlantingHospitals(exchange, fake, rounds)
    state, exchange = run_loop(tmp_path, config, hospitals, fake=fake)
    assert state.phase == "done"
    for round_index in range(1, rounds + 2):
        result = exchange.read_result(round_index)
        assert result is not None
        assert sorted(d.site_id for d in result.accepted) == sorted(SITES)
        assert result.rejected == [] and result.missing == []
        assert result.foreign_keys == 2
        assert sorted(result.foreign_key_samples) == sorted(planted(round_index)[:2])
    model = final_model(exchange, config)
    assert set(model) == set(INITIAL)
    status = collect_status(exchange)
    assert status.foreign_keys == 2
    assert f"foreign keys 2 (e.g. {planted(rounds + 1)[0]})" in status_title(status)
    assert all(site.decision == "accepted" for site in status.sites)


def test_status_counts_the_foreign_keys_of_an_open_round(tmp_path) -> None:
    config = make_config(rounds=1)
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")
    fake = FakeTime()
    seen = []

    class Watcher(RoundEvents):
        def round_opened(self, manifest: GlobalManifest) -> None:
            for key in planted(manifest.round_index)[:2]:
                exchange.store.put_new(key, b"{}")
            answer(exchange, manifest, "site-b")
            seen.append(collect_status(exchange))
            for site in SITES:
                if site != "site-b":
                    answer(exchange, manifest, site)

    run_loop(tmp_path, config, Watcher(), fake=fake)
    first = seen[0]
    assert first.foreign_keys == 2
    assert [s.site_id for s in first.sites if s.answered] == ["site-b"]

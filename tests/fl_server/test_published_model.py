"""The published model: written once when the final round closes, kept on resume, refused
when the exchange holds another.

Hospitals are scripted as in ``test_early_stopping`` (over-confident validation reports, so a
scaling is fitted); the expected bytes are built here from ``fl_core.recalibration`` directly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedsilo.engine.final_model import published_weights
from fl_core.errors import ExchangeError
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.ledger import verify_ledger
from fl_core.exchange.manifests import GlobalManifest, PublishedModel, RoundResult
from fl_core.exchange.protocol import Exchange
from fl_core.hashing import sha256_hex
from fl_core.recalibration import RISK_SLOPE, PlattScaling, with_scaling
from fl_core.serialisation import decode_weights, encode_weights
from fl_server.aggregator import FedAvgAggregator
from fl_server.published_model import publish_final_model
from fl_server.round_loop import RoundLoop
from tests.fl_server._round_harness import SITES, Crash, FakeTime, make_config
from tests.fl_server.test_early_stopping import BINS, INITIAL, ValidationCourse, run

FINAL = 3  # two training rounds, then the final evaluation


def final_of(exchange: Exchange) -> tuple[GlobalManifest, RoundResult]:
    manifest, result = exchange.read_global_manifest(FINAL), exchange.read_result(FINAL)
    assert manifest is not None and manifest.final and result is not None
    return manifest, result


def stored_published(exchange: Exchange) -> tuple[PublishedModel, bytes]:
    manifest = exchange.read_published_manifest()
    assert manifest is not None
    return manifest, exchange.read_published_weights(manifest)


@pytest.fixture
def exchange(tmp_path: Path) -> Exchange:
    return run(tmp_path, [0.5], rounds=2)


def test_the_final_round_publishes_its_global_model_recalibrated(exchange: Exchange) -> None:
    final, result = final_of(exchange)
    fitted = result.recalibration
    assert fitted is not None
    published, data = stored_published(exchange)
    global_model = decode_weights(exchange.read_global_weights(final))
    scaling = PlattScaling(intercept=fitted.intercept, slope=fitted.slope)
    assert data == encode_weights(with_scaling(global_model, scaling))
    assert published.round_index == FINAL and published.global_sha256 == final.sha256
    assert published.sha256 == sha256_hex(data) and published.num_bytes == len(data)
    assert published.scaling is not None
    assert published.scaling.intercept == fitted.intercept
    assert published.scaling.slope == fitted.slope
    assert published.config_hash == result.config_hash == final.config_hash
    assert float(decode_weights(data)[RISK_SLOPE][0]) == pytest.approx(fitted.slope, rel=1e-6)
    assert encode_weights(published_weights(exchange, 2)) == data  # what the run folder gets
    report = verify_ledger(exchange)
    assert report.ok, report.problems
    assert report.published_sha256 == published.sha256 and published.sha256 in report.summary()


def test_without_a_scaling_the_published_model_is_the_global_model(tmp_path: Path) -> None:
    exchange = run(tmp_path, [0.5], rounds=1, **{"evaluation.recalibrate": False})
    final = exchange.read_global_manifest(2)
    assert final is not None and final.final
    published, data = stored_published(exchange)
    assert published.scaling is None and published.round_index == 2
    assert data == exchange.read_global_weights(final)


def test_a_resumed_aggregator_keeps_the_published_model(exchange: Exchange) -> None:
    first, data = stored_published(exchange)
    final, result = final_of(exchange)
    again = publish_final_model(exchange, final, result, lambda: first.created_unix + 3600.0)
    assert again == first  # the stored manifest, not one stamped an hour later
    assert stored_published(exchange) == (first, data)
    keys = exchange.store.list_keys(exchange.layout.published_prefix())
    published = [exchange.layout.published_weights_key(), exchange.layout.published_manifest_key()]
    assert keys == sorted(published)


class CrashAtTheFinalClose(ValidationCourse):
    """Kills the aggregator once the final round's result and ledger entry are written."""

    def round_opened(self, manifest: GlobalManifest) -> None:
        if not self.exchange.list_answered_sites(manifest.round_index):  # resumed: answered
            super().round_opened(manifest)

    def round_closed(self, result: RoundResult) -> None:
        if result.round_index == FINAL and not getattr(self, "crashed", False):
            self.crashed = True
            raise Crash()


def test_an_aggregator_killed_before_publishing_publishes_when_it_resumes(tmp_path: Path) -> None:
    config = make_config(**{"rounds": 2, "evaluation.histogram_bins": BINS})
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), config.federation_id)
    events, fake = CrashAtTheFinalClose(exchange, [0.5]), FakeTime()

    def loop() -> RoundLoop:
        return RoundLoop(
            exchange, FedAvgAggregator(), config, SITES, initial_weights=dict(INITIAL),
            events=events, clock=fake.clock, sleep=fake.sleep, owner_id="agg-1",
        )  # fmt: skip

    with pytest.raises(Crash):
        loop().run()
    assert exchange.read_ledger_entry(FINAL) is not None
    assert exchange.read_published_manifest() is None
    assert loop().run().phase == "done"
    published, _ = stored_published(exchange)
    final, result = final_of(exchange)
    assert result.recalibration is not None and published.global_sha256 == final.sha256
    assert verify_ledger(exchange).ok


def history_without_the_published_model(exchange: Exchange, root: Path) -> Exchange:
    """A copy of ``exchange``'s federation at ``root`` with no published model in it yet."""
    copy = Exchange(LocalDirectoryStore(root), exchange.federation_id)
    for key in exchange.store.list_keys(exchange.layout.root):
        if not key.startswith(exchange.layout.published_prefix()):
            copy.store.put_new(key, exchange.store.get(key))
    return copy


def test_another_stored_model_file_is_refused(exchange: Exchange, tmp_path: Path) -> None:
    final, result = final_of(exchange)
    other = history_without_the_published_model(exchange, tmp_path / "other")
    foreign = encode_weights({**dict(INITIAL), "w": np.ones((3, 2), np.float32)})
    other.store.put_new(other.layout.published_weights_key(), foreign)
    with pytest.raises(ExchangeError, match=r"not round 3's global model .*its file holds"):
        publish_final_model(other, final, result, lambda: 0.0)
    assert other.read_published_manifest() is None


def test_a_stored_manifest_naming_another_model_is_refused(
    exchange: Exchange, tmp_path: Path
) -> None:
    published, _ = stored_published(exchange)
    final, result = final_of(exchange)
    other = history_without_the_published_model(exchange, tmp_path / "other")
    unscaled = exchange.read_global_weights(final)
    stale = PublishedModel.model_validate(
        {**published.model_dump(), "sha256": sha256_hex(unscaled), "num_bytes": len(unscaled)}
        | {"scaling": None}
    )
    other.publish_model(unscaled, stale)
    with pytest.raises(ExchangeError, match="its manifest names another model"):
        publish_final_model(other, final, result, lambda: 0.0)
    assert stored_published(other) == (stale, unscaled)  # kept, for the operator to look at


def test_only_the_final_round_is_published(exchange: Exchange) -> None:
    training = exchange.read_global_manifest(1)
    result = exchange.read_result(1)
    assert training is not None and result is not None
    with pytest.raises(ValueError, match="not the final round"):
        publish_final_model(exchange, training, result, lambda: 0.0)

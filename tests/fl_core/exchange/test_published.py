"""The published model's derivation and its manifest, as a reader of the exchange meets them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from fl_core.control_variates import control_name
from fl_core.errors import ExchangeError
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import AppliedScaling, PublishedModel, Recalibration
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.published import model_of, published_bytes, scaling_to_apply
from fl_core.hashing import sha256_hex
from fl_core.recalibration import RISK_INTERCEPT, RISK_SLOPE
from fl_core.serialisation import decode_weights, encode_weights

MODEL = {
    "w": np.arange(6, dtype=np.float32).reshape(3, 2),
    RISK_INTERCEPT: np.array([0.25], np.float32),
    RISK_SLOPE: np.array([2.0], np.float32),
}
SCAFFOLD_GLOBAL = encode_weights({**MODEL, control_name("w"): np.ones((3, 2), np.float32)})
FITTED = Recalibration(intercept=-0.5, slope=0.5, validation_examples=400)


def manifest_document(data: bytes) -> dict[str, object]:
    return {
        "federation_id": "demo",
        "round_index": 3,
        "sha256": sha256_hex(data),
        "num_bytes": len(data),
        "global_sha256": sha256_hex(SCAFFOLD_GLOBAL),
        "scaling": {"intercept": -0.5, "slope": 0.5},
        "config_hash": "c" * 64,
        "created_unix": 1.0,
    }


def test_the_published_model_drops_the_controls_and_composes_the_scaling() -> None:
    scaling = scaling_to_apply(model_of(SCAFFOLD_GLOBAL), FITTED)
    assert scaling == AppliedScaling(intercept=-0.5, slope=0.5)
    published = decode_weights(published_bytes(SCAFFOLD_GLOBAL, scaling))
    assert published.keys() == MODEL.keys()
    np.testing.assert_array_equal(published["w"], MODEL["w"])
    assert float(published[RISK_INTERCEPT][0]) == pytest.approx(-0.5 + 0.5 * 0.25)
    assert float(published[RISK_SLOPE][0]) == pytest.approx(0.5 * 2.0)
    assert published_bytes(SCAFFOLD_GLOBAL, None) == encode_weights(MODEL)


def test_a_model_without_the_scaling_tensors_is_published_as_it_is() -> None:
    plain = encode_weights({"w": MODEL["w"]})
    assert scaling_to_apply(model_of(plain), FITTED) is None
    assert scaling_to_apply(model_of(SCAFFOLD_GLOBAL), None) is None
    assert published_bytes(plain, None) == plain


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"sha256": "A" * 64}, "sha256"),
        ({"num_bytes": 0}, "num_bytes"),
        ({"round_index": 0}, "round_index"),
        ({"scaling": {"intercept": 0.0, "slope": -1.0}}, "slope"),
        ({"scaling": {"intercept": float("nan"), "slope": 1.0}}, "intercept"),
        ({"created_unix": float("inf")}, "created_unix"),
        ({"model": "pickle"}, "model"),
    ],
)
def test_a_hostile_manifest_is_refused_naming_the_field(
    change: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError, match=field):
        PublishedModel.model_validate({**manifest_document(b"x"), **change})


def test_the_exchange_refuses_a_garbled_or_foreign_manifest(tmp_path: Path) -> None:
    exchange = Exchange(LocalDirectoryStore(tmp_path), "demo")
    key = exchange.layout.published_manifest_key()
    exchange.store.put_new(key, b'{"federation_id": "demo", "sha256": ')
    with pytest.raises(ExchangeError, match=r"published/model\.json .* is malformed"):
        exchange.read_published_manifest()
    elsewhere = Exchange(LocalDirectoryStore(tmp_path / "b"), "demo")
    data = published_bytes(SCAFFOLD_GLOBAL, None)
    foreign = PublishedModel.model_validate({**manifest_document(data), "federation_id": "other"})
    elsewhere.publish_model(data, foreign)
    with pytest.raises(ExchangeError, match="names federation 'other'"):
        elsewhere.read_published_manifest()


def test_a_file_that_is_not_the_manifests_is_refused(tmp_path: Path) -> None:
    exchange = Exchange(LocalDirectoryStore(tmp_path), "demo")
    data = published_bytes(SCAFFOLD_GLOBAL, None)
    manifest = PublishedModel.model_validate(manifest_document(data))
    with pytest.raises(ExchangeError, match="does not match its manifest"):
        exchange.publish_model(SCAFFOLD_GLOBAL, manifest)
    exchange.store.put_new(exchange.layout.published_weights_key(), SCAFFOLD_GLOBAL)
    with pytest.raises(ExchangeError, match="run `fedsilo ledger verify`"):
        exchange.read_published_weights(manifest)

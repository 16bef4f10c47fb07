"""``ledger verify`` and the published model: derived again from the final round, byte for byte.

The exchange is the session's tiny simulated federation (``tests/conftest.py``), copied per
test; the forgeries below keep the manifest consistent with the file they put in its place,
so only the derivation can catch them.
"""

from __future__ import annotations

import json
from pathlib import Path

from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.ledger import LedgerReport, verify_ledger
from fl_core.exchange.manifests import AppliedScaling, PublishedModel
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.published import model_of, published_bytes
from fl_core.hashing import sha256_hex
from fl_core.serialisation import encode_weights

FEDERATION = "demo"
FINAL = 3


def exchange_at(root: Path) -> Exchange:
    return Exchange(LocalDirectoryStore(root), FEDERATION)


def stored(exchange: Exchange) -> PublishedModel:
    manifest = exchange.read_published_manifest()
    assert manifest is not None
    return manifest


def overwrite(exchange: Exchange, key: str, data: bytes) -> None:
    """History files are read-only in a local exchange; whoever owns the folder can undo it."""
    path = Path(exchange.store.describe().removeprefix("file://")) / key
    path.chmod(0o600)
    path.write_bytes(data)


def forge(exchange: Exchange, data: bytes, scaling: AppliedScaling | None) -> None:
    """Replace the published model with ``data`` and a manifest that vouches for it."""
    manifest = stored(exchange)
    forged = PublishedModel.model_validate(
        {**manifest.model_dump(), "sha256": sha256_hex(data), "num_bytes": len(data)}
        | {"scaling": None if scaling is None else scaling.model_dump()}
    )
    overwrite(exchange, exchange.layout.published_weights_key(), data)
    overwrite(exchange, exchange.layout.published_manifest_key(), forged.model_dump_json().encode())


def only_problem(report: LedgerReport) -> str:
    assert [p.round_index for p in report.problems] == [FINAL], report.problems
    return report.problems[0].message


def global_bytes(exchange: Exchange) -> bytes:
    manifest = exchange.read_global_manifest(FINAL)
    assert manifest is not None and manifest.final
    return exchange.read_global_weights(manifest)


def test_a_finished_run_publishes_the_model_its_run_folder_holds(
    finished_run: Path, exchange_dir: Path
) -> None:
    exchange = exchange_at(exchange_dir)
    published = stored(exchange)
    data = exchange.read_published_weights(published)
    assert (finished_run / "model.safetensors").read_bytes() == data
    assert published.round_index == FINAL
    report = verify_ledger(exchange)
    assert report.ok, report.problems
    assert report.published_sha256 == published.sha256


def test_an_altered_published_file_is_caught(exchange_dir: Path) -> None:
    exchange = exchange_at(exchange_dir)
    data = bytearray(exchange.read_published_weights(stored(exchange)))
    data[-1] ^= 0x01
    overwrite(exchange, exchange.layout.published_weights_key(), bytes(data))
    assert "published model file was altered" in only_problem(verify_ledger(exchange))


def test_a_model_scaled_otherwise_is_caught_though_its_manifest_matches(
    exchange_dir: Path,
) -> None:
    exchange = exchange_at(exchange_dir)
    other = AppliedScaling(intercept=0.3, slope=1.7)
    forge(exchange, published_bytes(global_bytes(exchange), other), other)
    message = only_problem(verify_ledger(exchange))
    assert "another scaling than the final round's recalibration" in message


def test_other_tensors_under_the_recorded_scaling_are_caught(exchange_dir: Path) -> None:
    exchange = exchange_at(exchange_dir)
    model = model_of(global_bytes(exchange))
    largest = max(model, key=lambda name: model[name].size)
    doctored = encode_weights({**model, largest: model[largest] + 1})
    forge(exchange, published_bytes(doctored, stored(exchange).scaling), stored(exchange).scaling)
    message = only_problem(verify_ledger(exchange))
    assert "not the final global model with its recorded scaling" in message


def test_a_garbled_or_misplaced_manifest_is_caught(exchange_dir: Path) -> None:
    exchange = exchange_at(exchange_dir)
    key = exchange.layout.published_manifest_key()
    manifest = stored(exchange)
    overwrite(exchange, key, json.dumps({**manifest.model_dump(), "round_index": 2}).encode())
    report = verify_ledger(exchange)
    assert [p.message for p in report.problems] == ["published model names no final round"]
    overwrite(exchange, key, b"\x00not json")
    report = verify_ledger(exchange)
    assert "published model manifest is malformed" in only_problem(report)
    assert "FAILED at round 3" in report.summary()

"""``fedsilo simulate`` on the eICU-shaped twin: the run folder's model is the exchange's.

The clinical team fetches the federation's model from the exchange (S3 in a deployment, no run
folder there); the run folder must hold those very bytes, recalibrated, not a copy of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsilo.testing.cli import run_fedsilo
from fl_core.config import load_config
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.ledger import verify_ledger
from fl_core.exchange.protocol import Exchange
from fl_core.recalibration import RISK_INTERCEPT, RISK_SLOPE
from fl_core.serialisation import decode_weights

pytestmark = pytest.mark.slow

ROUNDS = 2


def test_the_run_folder_holds_the_exchanges_published_model(tmp_path: Path) -> None:
    config = tmp_path / "twin.yaml"
    config.write_text(f"data:\n  twin:\n    stays: 1500\n    cache_dir: {tmp_path / 'cache'}\n")
    done = run_fedsilo(
        *("simulate", "--twin", "--hospitals", "4", "--rounds", str(ROUNDS)),
        *("--config", str(config), "--out", str(tmp_path), "--run-id", "twin"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    federation_id = load_config(config).federation_id
    exchange = Exchange(LocalDirectoryStore(tmp_path / "twin" / "exchange"), federation_id)
    published = exchange.read_published_manifest()
    assert published is not None
    data = exchange.read_published_weights(published)
    assert (tmp_path / "twin" / "model.safetensors").read_bytes() == data
    final = exchange.read_global_manifest(published.round_index)
    result = exchange.read_result(published.round_index)
    assert final is not None and final.final and result is not None
    assert published.global_sha256 == final.sha256
    fitted = result.recalibration
    assert fitted is not None, "the twin's validation splits fit a scaling"
    assert published.scaling is not None and published.scaling.slope == fitted.slope
    model = decode_weights(data)
    assert float(model[RISK_SLOPE][0]) == pytest.approx(fitted.slope, rel=1e-6)
    assert float(model[RISK_INTERCEPT][0]) == pytest.approx(fitted.intercept, rel=1e-6, abs=1e-7)
    assert data != exchange.read_global_weights(final)  # the global model is left unscaled
    report = verify_ledger(exchange)
    assert report.ok, report.problems

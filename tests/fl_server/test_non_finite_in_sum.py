"""FedAvg scans each slice for NaN/Inf as it adds it (admission does not read the update a
second time for it): an update found non-finite half-way is rejected, and the sum is begun
again from the updates accepted before it, so the model is the same bytes as without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedsilo.testing.manifests import answer_to
from fl_core.admission import update_metadata
from fl_core.aggregation import CHUNK_ELEMENTS, StreamingWeightedMean
from fl_core.config import load_config
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import GlobalManifest
from fl_core.exchange.protocol import Exchange
from fl_core.serialisation import TensorSpec, decode_weights, encode_weights
from fl_server.aggregator import FedAvgAggregator
from fl_server.round_events import RoundEvents
from fl_server.round_loop import RoundLoop

SIZE = CHUNK_ELEMENTS * 2 + 5  # three slices: a NaN in the last one comes after two added
SITES = ["site-a", "site-b", "site-c", "site-d"]
POISONED = "site-b"
EXAMPLES = {"site-a": 30, "site-b": 40, "site-c": 50, "site-d": 60}


def weights_of(site: str) -> dict[str, np.ndarray]:
    values = np.random.default_rng(SITES.index(site)).normal(size=SIZE).astype(np.float32)
    if site == POISONED:
        values[-1] = np.nan
    return {"w": values}


class Hospitals(RoundEvents):
    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    def round_opened(self, manifest: GlobalManifest) -> None:
        if self.exchange.list_answered_sites(manifest.round_index):
            return
        for site in SITES:
            update = answer_to(manifest, site, num_examples=EXAMPLES[site])
            data = None
            if manifest.task == "train":
                data = encode_weights(weights_of(site), update_metadata(update))
            self.exchange.write_update(update, data)


def test_an_update_found_non_finite_while_added_leaves_the_model_untouched(tmp_path: Path):
    config = load_config(
        overrides={
            "federation_id": "nan",
            "rounds": 1,
            "round.min_sites": 2,
            "round.deadline_s": 100.0,
            "round.lease_s": 30.0,
            "data.synthetic.hospitals": len(SITES),
        }
    )
    exchange = Exchange(LocalDirectoryStore(tmp_path), "nan")
    now = [1_000_000.0]
    loop = RoundLoop(
        exchange,
        FedAvgAggregator(),
        config,
        SITES,
        initial_weights={"w": np.zeros(SIZE, np.float32)},
        events=Hospitals(exchange),
        clock=lambda: now[0],
        sleep=lambda seconds: now.__setitem__(0, now[0] + seconds),
        owner_id="agg-1",
    )
    loop.run()
    result = exchange.read_result(1)
    assert result is not None
    assert [(d.site_id, d.reason) for d in result.rejected] == [(POISONED, "non_finite")]
    accepted = [d.site_id for d in result.accepted]
    assert accepted == [s for s in SITES if s != POISONED]
    mean = StreamingWeightedMean({"w": TensorSpec("float32", (SIZE,))})
    for site in accepted:
        mean.add(weights_of(site), float(EXAMPLES[site]))
    manifest = exchange.read_global_manifest(2)
    assert manifest is not None
    model = decode_weights(exchange.read_global_weights(manifest))
    assert model["w"].tobytes() == mean.result()["w"].tobytes()

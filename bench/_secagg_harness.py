"""A federation round with hospitals as threads over a local-directory exchange.

Shared by ``bench/secagg_bench.py`` and the secure-aggregation tests: the aggregator is a real
``RoundLoop`` and every hospital runs the real client loop (``serve_sites``) with a trainer
that moves each parameter by a fixed, site-specific delta (so FedAvg of the round is known
exactly). A hospital can be made to die (an exception nothing catches ends its thread, as
SIGKILL ends a process) right before or right after its update is written.

Hospitals are threads, not ``fedsilo.engine.inline.InlineHospitals``: a secure-aggregation round
waits for the hospitals' adverts before it opens, so nobody can answer it from inside the
round loop, and the dropouts happen inside that round (between the masked update and the
unmask answer). Plain rounds run the same way, so the bench compares the protocols alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedsilo.engine.secagg_keys import key_path, load_key, register_simulated_sites
from fl_client.hospital import Hospital, serve_sites
from fl_client.site_policy_gate import SiteGate
from fl_client.trainer import ClientTrainer, TrainResult
from fl_core.config import FederationConfig, load_config
from fl_core.data.base import SiteData, Split
from fl_core.disclosure import DisclosureFloor
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import UpdateManifest
from fl_core.exchange.protocol import Exchange
from fl_core.types import Weights
from fl_server.aggregator import FedAvgAggregator
from fl_server.round_loop import RoundLoop


class Killed(BaseException):
    """Ends a hospital thread the way SIGKILL ends a process: nothing catches it."""


class DyingExchange(Exchange):
    """A hospital's exchange that dies around its training update: ``when`` is
    ``before_update``, ``after_update``, ``hang_after_update`` or empty (lives)."""

    def __init__(self, store: LocalDirectoryStore, federation_id: str, when: str) -> None:
        super().__init__(store, federation_id)
        self.when = when

    def write_update(self, manifest: UpdateManifest, weights: bytes | None) -> None:
        if self.when == "before_update" and manifest.task == "train":
            raise Killed
        super().write_update(manifest, weights)
        if self.when == "after_update" and manifest.task == "train":
            raise Killed
        if self.when == "hang_after_update" and manifest.task == "train":
            threading.Event().wait()  # hang until the test SIGKILLs this process


class Logistic(nn.Module):
    """One logit per row from ``features`` inputs through optional hidden layers."""

    def __init__(self, features: int, hidden: Sequence[int] = ()) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x).squeeze(-1)
        return out


class ShiftTrainer(ClientTrainer):
    """Moves every parameter by a site-specific delta; ``trained`` records the results."""

    def __init__(self, model: nn.Module, trained: dict[str, Weights]) -> None:
        super().__init__(model)
        self.trained = trained

    def train(self, data: SiteData, round_index: int, seed: int) -> TrainResult:
        rng = np.random.default_rng([int(data.site_id.rsplit("-", 1)[-1], 36), round_index])
        with torch.no_grad():
            for param in self.model.parameters():
                param.add_(torch.from_numpy(rng.normal(scale=0.05, size=param.shape)).float())
        self.trained[data.site_id] = self.get_weights()
        return TrainResult(num_examples=data.train.num_examples, train_loss=0.5)


def site_data(site: str, features: int) -> SiteData:
    """A few rows whose count depends on the site (so FedAvg weights differ)."""
    index = int(site.rsplit("-", 1)[-1], 36)
    rng = np.random.default_rng(index)

    def split(n: int) -> Split:
        x = rng.normal(size=(n, features)).astype(np.float32)
        return Split(x, (rng.random(n) < 0.3).astype(np.int8))

    names = tuple(f"f{i}" for i in range(features))
    return SiteData(site, names, split(10 + 7 * (index % 10)), split(4), split(6))


def secagg_round_config(sites: Sequence[str], **overrides: object) -> FederationConfig:
    """One secure-aggregation round of ``sites`` that fails below a quorum of two, with short
    deadlines (3 s for updates, 2 s for unmask answers) so that a dropout's cost is seen fast;
    ``overrides`` are dotted config keys."""
    base: dict[str, object] = {
        "federation_id": "sa",
        "rounds": 1,
        "evaluation.histogram_bins": 10,
        "round.min_sites": 2,
        "round.deadline_s": 3.0,
        "round.poll_interval_s": 0.02,
        "round.below_quorum": "fail",
        "data.synthetic.hospitals": len(sites),
        "privacy.secagg.enabled": True,
        "privacy.secagg.advert_timeout_s": 20.0,
        "privacy.secagg.unmask_timeout_s": 2.0,
    }
    return load_config(overrides={**base, **overrides})


def run_round(
    workdir: Path,
    sites: Sequence[str],
    config: FederationConfig,
    model: Callable[[], nn.Module],
    dying: dict[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    floors: dict[str, DisclosureFloor] | None = None,
    gates: dict[str, SiteGate] | None = None,
) -> tuple[Exchange, Weights, dict[str, Weights]]:
    """Run the federation to its end; returns the exchange, initial weights, trained ones.

    ``floors``: the disclosure floor of each hospital's site policy (none: no floor);
    ``gates``: each hospital's site policy gate (none: no policy)."""
    exchange = Exchange(LocalDirectoryStore(workdir / "exchange"), config.federation_id)
    if config.privacy.secagg.enabled:
        register_simulated_sites(exchange, sites, workdir / "keys")
    torch.manual_seed(0)
    initial = {k: v.detach().numpy().copy() for k, v in model().state_dict().items()}
    features = int(next(iter(initial.values())).shape[-1])
    trained: dict[str, Weights] = {}
    threads = []
    for site in sites:
        key = None
        if config.privacy.secagg.enabled:
            key = load_key(key_path(workdir / "keys", site))
        hospital = Hospital(
            data=site_data(site, features),
            trainer=ShiftTrainer(model(), trained),
            secagg_key=key,
            disclosure_floor=(floors or {}).get(site),
            site_gate=(gates or {}).get(site),
        )
        own = DyingExchange(
            LocalDirectoryStore(workdir / "exchange"),
            config.federation_id,
            (dying or {}).get(site, ""),
        )
        thread = threading.Thread(
            target=lambda o=own, h=hospital: serve_sites(o, [h], config, 60.0), daemon=True
        )
        thread.start()
        threads.append(thread)
    loop = RoundLoop(
        exchange, FedAvgAggregator(), config, list(sites), initial_weights=initial, sleep=sleep
    )
    try:
        loop.run()
    finally:
        give_up = time.monotonic() + 5  # hospitals of a failed round wait on; they are daemons
        for thread in threads:
            thread.join(timeout=max(0.0, give_up - time.monotonic()))
    return exchange, initial, trained


def serve_in_process(
    workdir: Path, sites: Sequence[str], config: FederationConfig, features: int, when: str
) -> None:
    """A hospital process (``multiprocessing`` spawn target) hosting ``sites`` in turn."""
    torch.set_num_threads(1)
    hospitals = [
        Hospital(
            data=site_data(site, features),
            trainer=ShiftTrainer(Logistic(features), {}),
            secagg_key=load_key(key_path(workdir / "keys", site)),
        )
        for site in sites
    ]
    own = DyingExchange(LocalDirectoryStore(workdir / "exchange"), config.federation_id, when)
    serve_sites(own, hospitals, config, 60.0)

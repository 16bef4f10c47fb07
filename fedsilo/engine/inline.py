"""A whole federation in one process: hospitals answer inside the round loop's thread.

``fedsilo simulate`` spawns hospital workers, which costs seconds per run (each imports torch
and loads its data); comparing strategies means many short federations on the same data, so
this driver loads the hospitals once and runs federation after federation over a real
local-directory exchange with the real round loop, admission and hospital code
(``answer_round``). Only the process boundary is missing, so use it for tests and
benchmarks of aggregation strategies, and ``simulate`` for anything else: hospital-side
privacy (DP-SGD budgets, secure-aggregation keys) is set up by the worker loader, not here.

``InlineHospitals`` is the one place that answers for hospitals inside the round loop;
tests that need more (hospitals that restart, an aggregator that crashes) pass their own
``HospitalsFor`` or subclass it rather than writing another answering loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from fedsilo.engine.app import FederatedApp
from fedsilo.engine.federation import initial_model_weights, rows_from_exchange
from fedsilo.engine.metrics_row import MetricsRow
from fl_client.hospital import GlobalModel, Hospital, answer_round
from fl_core.config import FederationConfig
from fl_core.data.base import SiteData
from fl_core.data.standardise import FeatureMoments
from fl_core.errors import ConfigError
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import GlobalManifest
from fl_core.exchange.protocol import Exchange
from fl_server.round_events import RoundEvents
from fl_server.round_loop import RoundLoop

HospitalsFor = Callable[[int], Sequence[Hospital]]
"""The hospitals that answer round ``round_index``: a test swaps in fresh ones to restart them."""


class InlineHospitals(RoundEvents):
    """Answers for every hospital of a round as soon as the round loop opens it.

    Extension points: ``hospitals_for`` says which hospitals answer which round, and a
    subclass overrides ``answer`` to act around one hospital's answer (a crash or a dropout)
    or ``round_closed`` to act on a round's result.
    """

    def __init__(
        self, exchange: Exchange, config: FederationConfig, hospitals_for: HospitalsFor
    ) -> None:
        if config.privacy.secagg.enabled:
            raise ConfigError(
                "privacy.secagg rounds cannot be answered inline: the round loop waits for the "
                "hospitals' adverts before round_opened runs; run hospitals as serve_sites "
                "threads (as bench/_secagg_harness.py does) or turn privacy.secagg off"
            )
        self.exchange = exchange
        self.config = config
        self.hospitals_for = hospitals_for

    def round_opened(self, manifest: GlobalManifest) -> None:
        hospitals = self.hospitals_for(manifest.round_index)
        invited = set(manifest.invited_sites)
        # read, verified and decoded once for every hospital, as a worker hosting them does
        model = None
        if any(hospital.site_id in invited for hospital in hospitals):
            model = GlobalModel.read(self.exchange, manifest)
        for hospital in hospitals:
            self.answer(hospital, manifest, model)

    def answer(
        self, hospital: Hospital, manifest: GlobalManifest, model: GlobalModel | None
    ) -> bool:
        """One hospital's answer; False when it is not invited or already answered."""
        return answer_round(self.exchange, hospital, manifest, self.config, global_model=model)


def inline_round_loop(
    exchange: Exchange,
    config: FederationConfig,
    sites: Sequence[SiteData],
    app: FederatedApp,
    state_dir: Path | None = None,
) -> RoundLoop:
    """The round loop over ``exchange``, ``sites``'s hospitals answering inline.

    Hospitals given a ``state_dir`` keep their receipts there, as a hospital's worker does.
    """
    num_features = len(sites[0].feature_names)
    trainer = app.build_trainer(num_features, config)  # one trainer, as one worker has
    hospitals = [Hospital(data=site, trainer=trainer, state_dir=state_dir) for site in sites]
    initial = initial_model_weights(
        app, config, sites[0].feature_names, [FeatureMoments.of(site.train.x) for site in sites]
    )
    return RoundLoop(
        exchange,
        app.aggregator(config),
        config,
        [site.site_id for site in sites],
        initial_weights=initial,
        events=InlineHospitals(exchange, config, lambda _round: hospitals),
        features=sites[0].feature_names,
    )


def run_inline(
    config: FederationConfig,
    sites: Sequence[SiteData],
    exchange_dir: Path,
    app: FederatedApp | None = None,
) -> list[MetricsRow]:
    """Run ``config`` to its final evaluation; returns the per-round metrics rows."""
    if not sites:
        raise ConfigError("no hospitals to federate; check the data source")
    # a simulation in one process: nothing to survive a power loss, so no fsync per file
    exchange = Exchange(LocalDirectoryStore(exchange_dir, durable=False), config.federation_id)
    loop = inline_round_loop(exchange, config, sites, app or FederatedApp())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each hospital worker does: small models, many hospitals
    try:
        loop.run()
    finally:
        torch.set_num_threads(threads)
    return rows_from_exchange(exchange, config.rounds)

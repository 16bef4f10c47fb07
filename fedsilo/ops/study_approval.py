"""Approving a study: what a hospital's admin reads before adding it to the site policy.

``fedsilo site approve`` reads the newest published global model of a federation, verifies
that its study hashes to its config hash, computes the architecture digest from the model
file's own header, and prints the study and a policy snippet holding both digests. The admin
reviews the study, pastes the snippet under ``studies:`` and restarts the hospital's client;
nothing is approved by running the command itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from fl_core.errors import AccessDeniedError, ConfigError
from fl_core.exchange.manifests import GlobalManifest
from fl_core.exchange.protocol import Exchange
from fl_core.study import Study, file_architecture


@dataclass(frozen=True)
class PublishedStudy:
    """The study of a published global model, verified, and that model's architecture."""

    manifest: GlobalManifest
    study: Study
    architecture: str


def newest_published(exchange: Exchange) -> GlobalManifest | None:
    """The newest published global manifest, None before the first (hospitals probe round by
    round: they cannot list the exchange)."""
    newest = None
    round_index = 1
    try:
        while (manifest := exchange.read_global_manifest(round_index)) is not None:
            newest = manifest
            round_index += 1
    except AccessDeniedError:
        pass  # S3 answers 403 to a hospital for a round not published yet
    return newest


def newest_global(exchange: Exchange) -> GlobalManifest:
    """The newest published global manifest; a user error before the first."""
    newest = newest_published(exchange)
    if newest is None:
        raise ConfigError(
            f"federation {exchange.federation_id}: no global model is published yet in "
            f"{exchange.describe()}; approve once the centre has started it"
        )
    return newest


def verified_study(manifest: GlobalManifest) -> Study:
    """The manifest's study, only if it hashes to the manifest's config hash."""
    study = manifest.study
    if study is None:
        raise ConfigError(
            f"round {manifest.round_index} of federation {manifest.federation_id} publishes "
            "no study: its aggregator predates study approval; ask the centre to upgrade"
        )
    if study.digest() != manifest.config_hash or study.federation_id != manifest.federation_id:
        raise ConfigError(
            f"round {manifest.round_index}'s study does not match its config hash; do not "
            "approve it, and tell the coordinating centre"
        )
    return study


def published_study(exchange: Exchange) -> PublishedStudy:
    manifest = newest_global(exchange)
    study = verified_study(manifest)
    architecture = file_architecture(exchange.read_global_weights(manifest))
    return PublishedStudy(manifest, study, architecture)


def study_lines(study: Study, config_hash: str) -> list[str]:
    """The study in a few lines: what an admin decides on."""
    privacy = study.privacy
    dp_sgd = privacy.dp_sgd
    dp_fedavg = privacy.dp_fedavg
    features = ", ".join(study.features[:8]) + (", ..." if len(study.features) > 8 else "")
    return [
        f"federation {study.federation_id}: config hash {config_hash}",
        f"  strategy: {study.strategy.model_dump_json()}",
        f"  rounds: {study.rounds} (quorum {study.round.min_sites}, largest weight share "
        f"{study.round.max_weight_share:g})",
        f"  secure aggregation: {'on' if privacy.secagg.enabled else 'off'}",
        "  DP-SGD in the study's config: "
        + ("off" if dp_sgd is None else f"target epsilon {dp_sgd.target_epsilon:g}"),
        "  DP-FedAvg: " + ("off" if dp_fedavg is None else dp_fedavg.model_dump_json()),
        f"  fine-tuning epochs after the last round: {study.personalisation.finetune_epochs}",
        f"  features ({len(study.features)}): {features or 'not listed'}",
    ]


def policy_snippet(published: PublishedStudy) -> str:
    """YAML for the site policy's ``studies:`` list, approving this study and architecture."""
    study = published.study
    entry = {
        "federation_id": study.federation_id,
        "config_hashes": [published.manifest.config_hash],
        "architecture_digests": [published.architecture],
        "max_rounds": study.rounds,
        "require_secure_aggregation": study.privacy.secagg.enabled,
    }
    snippet: str = yaml.safe_dump([entry], sort_keys=False)
    return snippet

"""The study: what a federation agreed to run, and the digests a hospital approves it by.

A hospital approves a study, not a config file: the config also holds settings each machine
chooses for itself (exchange URI, workers, data path, endpoint, training device), which must
not change what was approved. ``Study`` keeps only what the federation agreed; its digest is
``study_hash(config)``, which the aggregator writes into every manifest and
publishes, with the study itself, in every ``GlobalManifest``. A hospital recomputes the
digest from the published study (``Study.digest``) before trusting either.

``architecture_digest`` names the model's shape: a hospital computes it from the global model
it received, never from what a manifest claims.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StringConstraints

from fl_core.config import (
    EvaluationConfig,
    FederationConfig,
    PersonalisationConfig,
    PrivacyConfig,
    StrategyConfig,
    StudyTraining,
)
from fl_core.hashing import canonical_json, canonical_json_sha256, sha256_hex
from fl_core.serialisation import TensorSpec, read_tensor_specs, specs_of
from fl_core.types import Weights

MAX_FEATURES = 100_000
"""Far above any tabular model's inputs: a bound on what a published study may list."""

HASHED_WHEN_SET: tuple[tuple[str, str, object], ...] = (
    ("training", "linear_skip", False),
    ("training", "logit_offset", None),
    ("personalization", "local_intercept", False),
    ("personalization", "local_intercept_prior_sd", 0.5),
)
"""Settings added after studies were approved: (section, key, default). Each is hashed only
where it leaves its default, so that every study approved before it keeps its digest."""

FeatureName = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StudyRound(_Frozen):
    """The round settings that decide who shapes the model (the rest are timing)."""

    min_sites: int = Field(ge=1)
    max_weight_share: float = Field(gt=0, le=1)


class Study(_Frozen):
    """What the federation agreed: the settings hospitals approve by their digest."""

    federation_id: str = Field(min_length=1, max_length=200)
    rounds: int = Field(ge=1)
    seed: int
    strategy: StrategyConfig
    training: StudyTraining
    evaluation: EvaluationConfig
    personalisation: PersonalisationConfig = Field(
        validation_alias=AliasChoices("personalisation", "personalization"),
        serialization_alias="personalization",
    )
    """Hashed under the key ``personalization``, as every study approved so far was."""
    privacy: PrivacyConfig
    round: StudyRound
    features: tuple[FeatureName, ...] = Field(
        max_length=MAX_FEATURES, description="the model's input features, in input order"
    )

    @classmethod
    def of(cls, config: FederationConfig, features: Sequence[str]) -> Study:
        """The study ``config`` runs on a model whose inputs are ``features``."""
        return cls(
            federation_id=config.federation_id,
            rounds=config.rounds,
            seed=config.seed,
            strategy=config.strategy,
            training=StudyTraining.model_validate(config.training.model_dump(exclude={"device"})),
            evaluation=config.evaluation,
            personalisation=config.personalisation,
            privacy=config.privacy,
            round=StudyRound(
                min_sites=config.round.min_sites,
                max_weight_share=config.round.max_weight_share,
            ),
            features=tuple(features),
        )

    def canonical_json(self) -> str:
        """Sorted keys, no spaces: the same study gives the same text on every machine."""
        tree = self.model_dump(mode="json", by_alias=True)
        for section, key, default in HASHED_WHEN_SET:
            if tree[section].get(key) == default:
                del tree[section][key]
        return canonical_json(tree)

    def digest(self) -> str:
        """sha256 of ``canonical_json``: the study's config hash."""
        return sha256_hex(self.canonical_json().encode())


def architecture_digest(specs: Mapping[str, TensorSpec]) -> str:
    """sha256 over the sorted (name, shape, dtype) of a model's tensors.

    Two models with the same layers, sizes and types share it whatever their values, so a
    hospital can approve an architecture once for every round of a study.
    """
    rows = sorted([name, list(spec.shape), spec.dtype] for name, spec in specs.items())
    return canonical_json_sha256(rows)


def weights_architecture(weights: Weights) -> str:
    """The architecture digest of decoded tensors (what a hospital received)."""
    return architecture_digest(specs_of(weights))


def file_architecture(data: bytes) -> str:
    """The architecture digest of a safetensors file, read from its header alone."""
    return architecture_digest(read_tensor_specs(data))


def study_hash(config: FederationConfig, features: Sequence[str] = ()) -> str:
    """The digest of the study ``config`` runs, recorded in every manifest as its config
    hash: hospitals approve a study by it, so it covers what the federation agreed and
    nothing a machine sets for itself (exchange, workers, data path, device)."""
    return Study.of(config, features).digest()

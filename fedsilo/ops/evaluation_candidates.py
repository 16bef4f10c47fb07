"""Candidate models for ``fedsilo data evaluate --candidate``: a feature set and a network.

Each candidate is cross-validated on the same folds (the deal depends on the labels alone) and
reported beside the others and APACHE IVa. Which one becomes the default is decided on training
rows only (``choose_by_validation``): the lowest mean log-loss of the published, recalibrated
federated model on the folds' validation rows. The test folds are never looked at to choose.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from fl_core.config import FederationConfig
from fl_core.data.eicu.features import FeatureGroup
from fl_core.errors import ConfigError


class Candidate(BaseModel):
    """A named preset: the feature groups a model trains on, and its hidden layers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    feature_groups: tuple[FeatureGroup, ...] | None = Field(default=None, min_length=1)
    """None: every column of the prepared folder."""
    hidden_sizes: tuple[int, ...] | None = None
    """None: the federation config's ``training.hidden_sizes``; ``()`` is logistic regression."""
    linear_skip: bool | None = None
    """None: the config's ``training.linear_skip``; True adds a linear term (wide and deep)."""
    logit_offset: str | None = None
    """An input the model starts from as its logit (None: the config's setting)."""


CANDIDATES: dict[str, Candidate] = {
    c.name: c
    for c in (
        Candidate(
            name="core",
            description="core features, the configured network (one layer of 32 by default)",
            feature_groups=("core",),
        ),
        Candidate(
            name="logistic",
            description="core features, logistic regression (no hidden layer)",
            feature_groups=("core",),
            hidden_sizes=(),
        ),
        Candidate(
            name="rich",
            description="core and admission features (apachePredVar), the configured network",
            feature_groups=("core", "admission"),
        ),
        Candidate(
            name="apache_input",
            description="core features and APACHE IVa's prediction, the configured network",
            feature_groups=("core", "apache_prediction"),
        ),
        Candidate(
            name="apache_skip",
            description="core features and APACHE IVa's prediction, the configured network "
            "with a linear term beside it (wide and deep)",
            feature_groups=("core", "apache_prediction"),
            linear_skip=True,
        ),
        Candidate(
            name="apache_customised",
            description="core features and APACHE IVa's prediction; the model starts as "
            "APACHE IVa and learns corrections (the configured network and a linear term)",
            feature_groups=("core", "apache_prediction"),
            logit_offset="apache_iva_logit",
        ),
        Candidate(
            name="apache_customised_logistic",
            description="core features and APACHE IVa's prediction; logistic regression "
            "started as APACHE IVa",
            feature_groups=("core", "apache_prediction"),
            hidden_sizes=(),
            logit_offset="apache_iva_logit",
        ),
        Candidate(
            name="rich_apache_customised",
            description="every feature group; the model starts as APACHE IVa and learns "
            "corrections (the configured network and a linear term)",
            feature_groups=("core", "admission", "apache_prediction"),
            logit_offset="apache_iva_logit",
        ),
        Candidate(
            name="rich_apache_customised_logistic",
            description="every feature group; logistic regression started as APACHE IVa",
            feature_groups=("core", "admission", "apache_prediction"),
            hidden_sizes=(),
            logit_offset="apache_iva_logit",
        ),
        Candidate(
            name="rich_apache_skip",
            description="every feature group, the configured network with a linear term",
            feature_groups=("core", "admission", "apache_prediction"),
            linear_skip=True,
        ),
        Candidate(
            name="rich_apache",
            description="every feature group, the configured network",
            feature_groups=("core", "admission", "apache_prediction"),
        ),
        Candidate(
            name="rich_apache_logistic",
            description="every feature group, logistic regression",
            feature_groups=("core", "admission", "apache_prediction"),
            hidden_sizes=(),
        ),
    )
}
DEFAULT_CANDIDATE = "apache_input"
"""What ``fedsilo data prepare`` and the default config train on eICU: it had the lowest
validation log-loss on the eICU demo (docs/model-quality.md)."""
AS_PREPARED = Candidate(
    name="as_prepared",
    description="every column of the prepared folder, the configured network (what "
    "fedsilo simulate trains on it)",
)
"""What ``data evaluate`` runs without ``--candidate``: any prepared folder, eICU or a table."""


def candidates_named(names: Sequence[str]) -> list[Candidate]:
    """The presets in the order given (``AS_PREPARED`` alone when none); unknown or repeated
    names are a ConfigError listing the choices."""
    if not names:
        return [AS_PREPARED]
    chosen = list(names)
    unknown = [n for n in chosen if n not in CANDIDATES]
    if unknown:
        raise ConfigError(f"--candidate {unknown[0]}: unknown; choose from {', '.join(CANDIDATES)}")
    if len(set(chosen)) != len(chosen):
        raise ConfigError("--candidate: a candidate is named twice; name each once")
    return [CANDIDATES[n] for n in chosen]


def candidate_config(config: FederationConfig, candidate: Candidate) -> FederationConfig:
    """``config`` with the candidate's network (unchanged where it keeps the config's)."""
    if (
        candidate.hidden_sizes is None
        and candidate.linear_skip is None
        and candidate.logit_offset is None
    ):
        return config
    tree = config.model_dump(mode="json")
    if candidate.hidden_sizes is not None:
        tree["training"]["hidden_sizes"] = list(candidate.hidden_sizes)
    if candidate.linear_skip is not None:
        tree["training"]["linear_skip"] = candidate.linear_skip
    if candidate.logit_offset is not None:
        tree["training"]["logit_offset"] = candidate.logit_offset
    return FederationConfig.model_validate(tree)


def choose_by_validation(losses: Mapping[str, float | None]) -> str | None:
    """The candidate with the lowest mean validation log-loss; None if none has one."""
    known = {name: loss for name, loss in losses.items() if loss is not None}
    if not known:
        return None
    return min(known, key=lambda name: known[name])

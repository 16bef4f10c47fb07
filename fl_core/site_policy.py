"""A hospital's site policy: what it agreed to take part in, and on what terms.

The policy is the hospital's own document (its security officer writes it; the coordinating
centre never sees or sets it). ``fedsilo client run`` loads it before the first round and
checks every round against it (``fl_client.site_policy_gate``), failing closed: a study not
listed here, a config hash or model architecture not approved, missing privacy protection,
too many rounds, a privacy-loss budget that would be exceeded or an answer too large is
declined, with the rule that refused it.

Loading: ``--site-policy FILE`` (YAML or JSON), or env ``FEDSILO_SITE_POLICY`` (a path), or
env ``FEDSILO_SITE_POLICY_JSON`` (the document itself: the hospital stack delivers it from an
SSM parameter in the hospital's own account). A malformed policy or an unknown key is a
``ConfigError`` (exit 2) naming the field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from fl_core.config import describe_validation_error
from fl_core.disclosure import DisclosureFloor
from fl_core.errors import ConfigError
from fl_core.ids import check_federation_id, check_site_id

POLICY_PATH_ENV = "FEDSILO_SITE_POLICY"
POLICY_JSON_ENV = "FEDSILO_SITE_POLICY_JSON"
MAX_POLICY_BYTES = 256 * 1024
"""Far above a policy of a hundred studies; an SSM advanced parameter holds 8 KiB."""

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
# the exchange's own id checks (a ConfigError is a ValueError: pydantic names the field)
FederationId = Annotated[str, AfterValidator(check_federation_id)]
SiteId = Annotated[str, AfterValidator(check_site_id)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ApprovedStudy(_Frozen):
    """One study the hospital takes part in, approved by its digests (``fedsilo site approve``
    prints them), with the privacy protection and the length the hospital requires of it."""

    federation_id: FederationId
    config_hashes: tuple[Sha256Hex, ...] = Field(
        min_length=1, description="study digests approved (fedsilo study show / site approve)"
    )
    architecture_digests: tuple[Sha256Hex, ...] = Field(
        min_length=1, description="model architectures approved (fedsilo site approve)"
    )
    max_rounds: int | None = Field(
        default=None, ge=1, description="training rounds the hospital takes part in at most"
    )
    dp_sgd_max_epsilon: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="train only under this hospital's own DP-SGD, target epsilon at most this",
    )
    require_secure_aggregation: bool = Field(
        default=False, description="train only if the study turns secure aggregation on"
    )


class SitePolicy(_Frozen):
    """Everything the hospital enforces on every round it serves (see the module docstring)."""

    site_id: SiteId
    studies: tuple[ApprovedStudy, ...] = Field(
        default=(), description="the studies served; any other federation is declined"
    )
    epsilon_budget: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="privacy loss the site spends over all studies together (basic "
        "composition of each study's DP-SGD epsilon); None: no site-wide cap",
    )
    disclosure_floor: DisclosureFloor | None = None
    max_update_bytes: int | None = Field(
        default=None, gt=0, description="the largest training answer this hospital sends"
    )

    @field_validator("studies")
    @classmethod
    def _each_study_once(cls, value: tuple[ApprovedStudy, ...]) -> tuple[ApprovedStudy, ...]:
        served = [study.federation_id for study in value]
        twice = sorted({f for f in served if served.count(f) > 1})
        if twice:
            raise ValueError(
                f"federation(s) {', '.join(twice)} listed more than once; list each study once "
                "with all its approved hashes"
            )
        return value

    def study(self, federation_id: str) -> ApprovedStudy | None:
        """The approval of ``federation_id``; None when the hospital does not serve it."""
        return next((s for s in self.studies if s.federation_id == federation_id), None)


def parse_site_policy(text: str, source: str) -> SitePolicy:
    """A policy document (YAML or JSON text); one line per problem, naming ``source``."""
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise ConfigError(f"site policy {source} is over {MAX_POLICY_BYTES} bytes; shorten it")
    try:
        loaded: Any = yaml.safe_load(text)
    except yaml.YAMLError as err:
        problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"site policy {source} does not parse ({problem}); fix it") from err
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"site policy {source} must be a mapping with site_id and studies at the top"
        )
    try:
        return SitePolicy.model_validate(loaded)
    except ValidationError as err:
        lines = describe_validation_error(err, f"site policy {source}").splitlines()
        raise ConfigError("; ".join(lines)) from err


def read_site_policy(path: Path) -> SitePolicy:
    if not path.is_file():
        raise ConfigError(f"site policy {path} not found; pass an existing --site-policy FILE")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"site policy {path} cannot be read ({err}); fix the file") from err
    return parse_site_policy(text, str(path))


def load_site_policy(
    path: Path | None, environ: Mapping[str, str] | None = None
) -> SitePolicy | None:
    """The policy in force: ``path`` (``--site-policy``), else ``FEDSILO_SITE_POLICY`` (a
    path), else ``FEDSILO_SITE_POLICY_JSON`` (the document); None when none is given."""
    env = os.environ if environ is None else environ
    if path is None and env.get(POLICY_PATH_ENV):
        path = Path(env[POLICY_PATH_ENV])
    if path is not None:
        return read_site_policy(path)
    document = env.get(POLICY_JSON_ENV)
    if document:
        return parse_site_policy(document, f"from {POLICY_JSON_ENV}")
    return None


def policy_summary(policy: SitePolicy) -> list[str]:
    """A few lines a person reads: studies, budget, floor, size limit."""
    lines = [f"site policy of {policy.site_id}: {len(policy.studies)} studies approved"]
    for study in policy.studies:
        privacy = []
        if study.dp_sgd_max_epsilon is not None:
            privacy.append(f"DP-SGD epsilon <= {study.dp_sgd_max_epsilon:g}")
        if study.require_secure_aggregation:
            privacy.append("secure aggregation")
        rounds = "any" if study.max_rounds is None else str(study.max_rounds)
        lines.append(
            f"  {study.federation_id}: {len(study.config_hashes)} config hash(es), "
            f"{len(study.architecture_digests)} architecture(s), rounds <= {rounds}, "
            f"privacy required: {', '.join(privacy) or 'none'}"
        )
    budget = "none" if policy.epsilon_budget is None else f"{policy.epsilon_budget:g}"
    lines.append(f"  epsilon budget over all studies: {budget}")
    floor = policy.disclosure_floor
    lines.append(
        "  disclosure floor: none"
        if floor is None
        else f"  disclosure floor: {floor.min_stays} stays, {floor.min_events} events"
    )
    if policy.max_update_bytes is not None:
        lines.append(f"  largest answer: {policy.max_update_bytes} bytes")
    return lines

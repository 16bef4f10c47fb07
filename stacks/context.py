"""The deployment's input: the ``fedsilo`` block of ``cdk.json`` context, validated.

A wrong or missing value fails synthesis before any construct is built, with the field named
(``fedsilo.hospitals.1.account_id: ...``), so that a typo never reaches CloudFormation.
Site, federation and account ids are checked by ``fl_core.ids``, the checks the exchange uses
to build its keys: an id that synthesises is an id the exchange accepts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fedsilo.ops.regions import Region
from fl_core.errors import ConfigError
from fl_core.ids import ACCOUNT_ID_REGEX, check_federation_id, check_site_id
from fl_core.site_policy import read_site_policy

CONTEXT_KEY = "fedsilo"
"""The key under ``context`` in ``cdk.json`` that holds a ``FederationContext``."""

ROLE_NAME_MAX = 64
BUCKET_NAME_MAX = 63

AccountId = Annotated[str, Field(pattern=ACCOUNT_ID_REGEX, description="12-digit AWS account id")]
InstanceType = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")]

GPU_FAMILIES = frozenset(
    {"g4dn", "g4ad", "g5", "g5g", "g6", "g6e", "gr6", "p3", "p3dn", "p4d", "p4de", "p5", "p5e"}
)
"""Instance families with an NVIDIA GPU that the ECS GPU-optimised AMI supports."""

ECR_IMAGE_PATTERN = re.compile(
    r"^(?P<account>[0-9]{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com/"
    r"(?P<repository>[a-z0-9][a-z0-9._/-]*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})|@(?P<digest>sha256:[0-9a-f]{64}))$",
    re.ASCII,
)
LOG_RETENTION_CHOICES = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
    2922, 3288, 3653,
)  # fmt: skip


def _site_id(value: str) -> str:
    return check_site_id(value)


def _federation_id(value: str) -> str:
    return check_federation_id(value)


def _gpu_instance_type(value: str) -> str:
    family = value.split(".", 1)[0]
    if family not in GPU_FAMILIES:
        raise ValueError(
            f"{value!r} has no NVIDIA GPU; pick one of the families {sorted(GPU_FAMILIES)} "
            "(e.g. g5.xlarge)"
        )
    return value


def _ecr_image(value: str) -> str:
    match = ECR_IMAGE_PATTERN.fullmatch(value)
    if match is None:
        raise ValueError(
            f"{value!r} is not an ECR image with a digest or an exact tag; write "
            "ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY@sha256:DIGEST (64 lower-case hex "
            "digits; preferred: it names one image for good) or ...REPOSITORY:TAG (tasks have "
            "no internet route, so only ECR in the federation's region is reachable)"
        )
    if match["tag"] == "latest":
        raise ValueError(
            f"{value!r} uses the moving tag 'latest'; pin a digest (REPOSITORY@sha256:...) "
            "or an exact version tag"
        )
    return value


SiteId = Annotated[str, AfterValidator(_site_id)]
FederationId = Annotated[str, AfterValidator(_federation_id)]
GpuInstanceType = Annotated[InstanceType, AfterValidator(_gpu_instance_type)]
EcrImage = Annotated[str, AfterValidator(_ecr_image)]


class _Frozen(BaseModel):
    """Base of the context models: immutable, and an unknown field is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


SITE_POLICY_MAX_BYTES = 8192
"""An SSM advanced parameter's limit: the site policy reaches the client task as one."""


class SiteAccount(_Frozen):
    """A hospital's site id in the exchange and the AWS account it deploys into."""

    site_id: SiteId
    account_id: AccountId


class HospitalSite(SiteAccount):
    """A listed hospital: its site and account, and the site policy its stack delivers."""

    site_policy: Path | None = Field(
        default=None,
        description="the hospital's site policy file (docs/site-policy.md), validated at "
        "synth, kept as an SSM parameter in the hospital's account and given to its client",
    )

    @model_validator(mode="after")
    def _policy_is_this_sites(self) -> HospitalSite:
        self.site_policy_json()  # a wrong policy stops synthesis, naming this hospital
        return self

    def site_policy_json(self) -> str | None:
        """The validated policy as the client reads it (``FEDSILO_SITE_POLICY_JSON``)."""
        if self.site_policy is None:
            return None
        try:
            policy = read_site_policy(self.site_policy)
        except ConfigError as err:
            raise ValueError(str(err)) from err
        if policy.site_id != self.site_id:
            raise ValueError(
                f"site_policy {self.site_policy} is site {policy.site_id}'s, not {self.site_id}'s"
            )
        document = policy.model_dump_json()
        if len(document.encode()) > SITE_POLICY_MAX_BYTES:
            raise ValueError(
                f"site_policy {self.site_policy} is {len(document.encode())} bytes as JSON, over "
                f"the {SITE_POLICY_MAX_BYTES} an SSM parameter holds; list fewer hashes"
            )
        return document


class Images(_Frozen):
    """Container images; ``None`` builds the image from ``docker/`` as a CDK asset at deploy.

    A value is an ECR image by digest (``REPOSITORY@sha256:...``, preferred: a tag can be
    pushed again, a digest cannot) or with an exact tag (``latest`` is refused): tasks run
    in subnets without an internet route, so only ECR in the federation's region can be
    pulled.
    """

    client: EcrImage | None = None
    server: EcrImage | None = None


class AggregatorSettings(_Frozen):
    """The coordinating centre's aggregator task (CPU on Fargate unless ``gpu``)."""

    gpu: bool = False
    cpu_units: int = Field(default=1024, ge=256, le=16384)
    memory_mib: int = Field(default=4096, ge=512, le=122880)
    gpu_instance_type: GpuInstanceType = "g5.xlarge"


class HospitalSettings(_Frozen):
    """What every hospital stack runs: one GPU task on an Auto Scaling group that can idle at 0."""

    instance_type: GpuInstanceType = "g5.xlarge"
    max_instances: int = Field(default=1, ge=1, le=10)
    desired_tasks: int = Field(
        default=1, ge=0, le=1, description="1 while the federation trains, 0 to scale to zero"
    )
    memory_mib: int = Field(default=14336, ge=1024)
    root_volume_gib: int = Field(default=100, ge=30, le=2000)


class FederationContext(_Frozen):
    """Everything ``app.py`` needs to build one AggregatorStack and one HospitalStack per site."""

    federation_id: FederationId
    coordinating_account: AccountId
    region: Region
    # empty at first: the centre deploys the aggregator (its bucket) before approving anyone
    hospitals: tuple[HospitalSite, ...] = Field(default=(), max_length=500)
    availability_zones: tuple[str, ...] | None = Field(
        default=None,
        min_length=2,
        description="zone names for the private subnets (pick zones that offer the GPU "
        "instance type); default: the account's first two zones, chosen at deploy",
    )
    exchange_bucket_name: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="default fedsilo-{federation_id}-{coordinating_account}",
    )
    aggregator: AggregatorSettings = AggregatorSettings()
    hospital: HospitalSettings = HospitalSettings()
    images: Images = Images()
    log_retention_days: int = Field(default=365)
    noncurrent_version_retention_days: int = Field(default=365, ge=30)
    ledger_retention_days: int = Field(
        default=2190,
        ge=1,
        le=36500,
        description="Object Lock retention the aggregator sets on ledger entries, round "
        "results and global models (default six years, HIPAA's documentation retention)",
    )
    revoked_hospitals: tuple[SiteAccount, ...] = Field(
        default=(),
        description="offboarded hospitals (written by `fedsilo offboard`): the exchange's "
        "bucket and key policies deny their task roles, and their accounts once no listed "
        "hospital remains there",
    )

    @field_validator("log_retention_days")
    @classmethod
    def _retention_supported(cls, value: int) -> int:
        if value not in LOG_RETENTION_CHOICES:
            raise ValueError(
                f"{value} is not a CloudWatch retention; use one of {LOG_RETENTION_CHOICES}"
            )
        return value

    @field_validator("availability_zones")
    @classmethod
    def _zones_in_region(cls, value: tuple[str, ...] | None, info: Any) -> tuple[str, ...] | None:
        region = info.data.get("region")
        if value is not None and region is not None:
            wrong = [zone for zone in value if not re.fullmatch(rf"{re.escape(region)}[a-z]", zone)]
            if wrong:
                raise ValueError(f"{wrong} are not zones of {region}; write e.g. {region}a")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FederationContext:
        seen: set[str] = set()
        for index, site in enumerate(self.hospitals):
            if site.site_id in seen:
                raise ValueError(f"hospitals.{index}.site_id {site.site_id!r} is listed twice")
            seen.add(site.site_id)
            if site.account_id == self.coordinating_account:
                raise ValueError(
                    f"hospitals.{index}.account_id is the coordinating account; each hospital "
                    "deploys into its own account (the trust boundary is the account)"
                )
            name = hospital_role_name(self.federation_id, site.site_id)
            if len(name) > ROLE_NAME_MAX:
                raise ValueError(
                    f"hospitals.{index}.site_id: role name {name!r} is {len(name)} characters, "
                    f"IAM allows {ROLE_NAME_MAX}; shorten the site id or the federation id"
                )
        listed = {site.site_id for site in self.hospitals}
        for index, revoked in enumerate(self.revoked_hospitals):
            if revoked.site_id in listed:
                raise ValueError(
                    f"revoked_hospitals.{index}.site_id {revoked.site_id!r} is also in hospitals; "
                    "remove it from one of the two lists"
                )
            if revoked.account_id == self.coordinating_account:
                raise ValueError(
                    f"revoked_hospitals.{index}.account_id is the coordinating account; a "
                    "revocation names a hospital's account"
                )
        if len(self.bucket_name) > BUCKET_NAME_MAX:
            raise ValueError(
                f"exchange bucket name {self.bucket_name!r} is over {BUCKET_NAME_MAX} "
                "characters; set exchange_bucket_name or shorten federation_id"
            )
        return self

    @property
    def bucket_name(self) -> str:
        return self.exchange_bucket_name or default_bucket_name(
            self.federation_id, self.coordinating_account
        )


# Names shared by both stacks. A hospital deploys into another account, so it cannot read the
# coordinating stack's outputs: the names it needs are derived from the context instead.

HOSPITAL_ROLE_PATH = "/fedsilo/"
SITE_TAG_KEY = "fedsilo-site-id"
"""Tag on each hospital task role; the bucket and key policies read it as a policy variable."""


def hospital_role_name(federation_id: str, site_id: str) -> str:
    """Task role name of a hospital; the exchange's policies allow exactly this role."""
    return f"{federation_id}-{site_id}"


def hospital_role_arn(federation_id: str, site: SiteAccount) -> str:
    name = hospital_role_name(federation_id, site.site_id)
    return f"arn:aws:iam::{site.account_id}:role{HOSPITAL_ROLE_PATH}{name}"


def default_bucket_name(federation_id: str, account: str) -> str:
    return f"fedsilo-{federation_id}-{account}"


def exchange_key_alias(federation_id: str) -> str:
    """Alias of the exchange key; hospitals' identity policies match it (kms:ResourceAliases)."""
    return f"alias/fedsilo/{federation_id}/exchange"


def parse_context(raw: object) -> FederationContext:
    """Validate the ``fedsilo`` context block; raise ``ConfigError`` naming each bad field."""
    if raw is None:
        raise ConfigError(
            f"cdk.json has no context key {CONTEXT_KEY!r}; add the federation block "
            "(federation_id, coordinating_account, region, hospitals)"
        )
    try:
        return FederationContext.model_validate(raw)
    except ValidationError as err:
        lines = [
            f"{CONTEXT_KEY}.{'.'.join(str(part) for part in error['loc']) or '(root)'}: "
            f"{error['msg']}"
            for error in err.errors()
        ]
        raise ConfigError("invalid cdk.json context:\n  " + "\n  ".join(lines)) from err

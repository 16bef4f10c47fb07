"""Who may touch the exchange: every policy statement of DESIGN.md's IAM rule, in one place.

The rule: a hospital's task role may read ``rounds/*/global.*`` and its own
``registry/{site_id}.json``, and write only ``rounds/*/updates/{site_id}.*``; it lists nothing
and reads no other hospital's update. Cross-account access needs both sides to agree, so the
rule is written twice, and either half alone is enough to stop a hospital:

* the hospital's identity policy (``hospital_identity_statements``) names its own site id
  literally; it lives in the hospital's account, so the hospital could widen it;
* the exchange's bucket and key policies (``hospital_bucket_statements``,
  ``hospital_key_statement``) live in the coordinating account and hold even against a
  hospital administrator who edits her own roles.

How the resource-side half scales to hundreds of hospitals (a bucket policy is limited to
20 KB, a key policy to 32 KB): one statement per hospital costs about 300 bytes, so 200
hospitals would need 60 KB. Instead ONE allow statement serves every hospital:

* ``aws:PrincipalArn`` must equal one of the listed task-role ARNs
  (``arn:aws:iam::{account}:role/fedsilo/{federation_id}-{site_id}``). The ARN binds a site id
  to the account that the coordinating centre registered for it: about 65 bytes a hospital,
  the least that can encode the pair. Conditions are used, not the ``Principal`` element, so
  the coordinating stack can be deployed before the hospitals create their roles.
* The resources name the site through the policy variable ``${aws:PrincipalTag/fedsilo-site-id}``
  (the tag that each HospitalStack puts on its task role), and a second condition requires the
  principal's ARN to end in ``{federation_id}-${aws:PrincipalTag/fedsilo-site-id}``. A tag is
  set by the hospital itself, so alone it would be forgeable; tied to the listed ARN it is
  not: hospital A's only listed role is ``.../{fid}-site-a``, which passes only while its tag
  (or a session tag) says ``site-a``.
* Small deny statements, with no list, confine every principal outside the coordinating
  account to GetObject/PutObject, to reading only global models and the registry, to writing
  only updates, and to write-once puts (``If-None-Match``), so the merged allow (which, as a
  cross product, would also allow reading one's own update) grants exactly DESIGN.md's rule.

Keys are the ones ``fl_core.exchange.layout.ExchangeLayout`` builds; ``tests/stacks`` checks the
patterns against it.
"""

from __future__ import annotations

from aws_cdk import aws_iam as iam

from fl_core.exchange.layout import ExchangeLayout
from stacks.context import (
    HOSPITAL_ROLE_PATH,
    SITE_TAG_KEY,
    FederationContext,
    HospitalSite,
    exchange_key_alias,
    hospital_role_arn,
    hospital_role_name,
)
from stacks.grants import allow

SITE_VARIABLE = f"${{aws:PrincipalTag/{SITE_TAG_KEY}}}"
"""IAM policy variable: the site id tag of the calling role (or of its session)."""


def partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


class ExchangeArns:
    """ARN patterns of one federation's exchange keys, for policies (``*`` = any round)."""

    def __init__(self, context: FederationContext) -> None:
        self.layout = ExchangeLayout(context.federation_id)
        self.bucket = f"arn:{partition(context.region)}:s3:::{context.bucket_name}"

    def objects(self, key_pattern: str) -> str:
        return f"{self.bucket}/{key_pattern}"

    @property
    def root(self) -> str:
        return self.objects(f"{self.layout.root}*")

    @property
    def global_models(self) -> str:
        return self.objects(f"{self.layout.root}rounds/*/global.*")

    @property
    def registry(self) -> str:
        return self.objects(f"{self.layout.registry_prefix()}*")

    def registry_of(self, site: str) -> str:
        return self.objects(f"{self.layout.registry_prefix()}{site}.json")

    @property
    def updates(self) -> str:
        return self.objects(f"{self.layout.root}rounds/*/updates/*")

    def updates_of(self, site: str) -> str:
        return self.objects(f"{self.layout.root}rounds/*/updates/{site}.*")


def hospital_principal_arns(context: FederationContext) -> list[str]:
    return [hospital_role_arn(context.federation_id, site) for site in context.hospitals]


def exchange_key_arns(context: FederationContext) -> str:
    """Any key of the coordinating account in the region: the exchange key's id is made there."""
    return (
        f"arn:{partition(context.region)}:kms:{context.region}:{context.coordinating_account}:key/*"
    )


def _role_matches_tag(context: FederationContext) -> str:
    """ARN pattern that only a role whose name ends in its own site-id tag satisfies."""
    name = hospital_role_name(context.federation_id, SITE_VARIABLE)
    return f"arn:{partition(context.region)}:iam::*:role{HOSPITAL_ROLE_PATH}{name}"


def _listed_hospital(context: FederationContext) -> dict[str, dict[str, object]]:
    """Conditions of the resource-side allows: a listed task role whose tag names its site."""
    return {
        "ArnEquals": {"aws:PrincipalArn": hospital_principal_arns(context)},
        "ArnLike": {"aws:PrincipalArn": _role_matches_tag(context)},
    }


def _deny_outsiders(
    context: FederationContext,
    sid: str,
    *,
    actions: list[str] | None = None,
    not_actions: list[str] | None = None,
    resources: list[str] | None = None,
    not_resources: list[str] | None = None,
    conditions: dict[str, dict[str, str]] | None = None,
) -> iam.PolicyStatement:
    """Deny the given actions and resources to every principal outside the coordinating account.

    ``conditions`` are added to the outsider condition (``aws:PrincipalAccount``).
    """
    outsider = {"StringNotEquals": {"aws:PrincipalAccount": context.coordinating_account}}
    return iam.PolicyStatement(
        sid=sid,
        effect=iam.Effect.DENY,
        principals=[iam.AnyPrincipal()],
        actions=actions,
        not_actions=not_actions,
        resources=resources,
        not_resources=not_resources,
        conditions={**outsider, **(conditions or {})},
    )


def hospital_bucket_statements(context: FederationContext) -> list[iam.PolicyStatement]:
    """Exchange bucket policy statements for all hospitals (see the module docstring)."""
    arns = ExchangeArns(context)
    get_put = ["s3:GetObject", "s3:PutObject"]
    return [
        iam.PolicyStatement(
            sid="HospitalsReadGlobalAndOwnRegistryWriteOwnUpdate",
            principals=[iam.AnyPrincipal()],
            actions=get_put,
            resources=_hospital_objects(arns),
            conditions=_listed_hospital(context),
        ),
        _deny_outsiders(
            context,
            "OutsidersOnlyGetAndPut",
            not_actions=get_put,
            resources=[arns.bucket, arns.objects("*")],
        ),
        _deny_outsiders(
            context,
            "OutsidersReadOnlyGlobalModelsAndRegistry",
            actions=["s3:GetObject"],
            not_resources=[arns.global_models, arns.registry],
        ),
        _deny_outsiders(
            context,
            "OutsidersWriteOnlyUpdates",
            actions=["s3:PutObject"],
            not_resources=[arns.updates],
        ),
        _deny_outsiders(
            context,
            "OutsidersWriteOnce",
            actions=["s3:PutObject"],
            resources=[arns.objects("*")],
            conditions={
                "Null": {"s3:if-none-match": "true"},
                "Bool": {"s3:ObjectCreationOperation": "true"},
            },
        ),
    ]


def _hospital_objects(arns: ExchangeArns) -> list[str]:
    """What any listed hospital may touch, its own site named by the policy variable."""
    return [arns.global_models, arns.registry_of(SITE_VARIABLE), arns.updates_of(SITE_VARIABLE)]


def hospital_key_statement(context: FederationContext) -> iam.PolicyStatement:
    """Exchange key policy statement: hospitals use the key only through S3, only for their keys.

    S3 calls KMS as the requester with the encryption context ``aws:s3:arn`` = the object's
    ARN (S3 Bucket Keys are off on the exchange bucket for exactly this reason), so the same
    object patterns as the bucket policy apply. Decrypt serves reading globals and the own
    registry entry, GenerateDataKey serves writing the own update; the bucket policy's denies
    stop the cross product (e.g. writing a global) before KMS is asked.
    """
    objects = _hospital_objects(ExchangeArns(context))
    return iam.PolicyStatement(
        sid="HospitalsUseKeyOnlyViaS3ForTheirObjects",
        principals=[iam.AnyPrincipal()],
        actions=["kms:Decrypt", "kms:GenerateDataKey"],
        resources=["*"],
        conditions={
            **_listed_hospital(context),
            "StringEquals": {"kms:ViaService": f"s3.{context.region}.amazonaws.com"},
            "StringLike": {"kms:EncryptionContext:aws:s3:arn": objects},
        },
    )


def hospital_identity_statements(
    context: FederationContext, site: HospitalSite
) -> list[iam.PolicyStatement]:
    """The hospital task role's own policy on the exchange: its site id, written literally."""
    arns = ExchangeArns(context)
    via_s3_with_exchange_alias = {
        "StringEquals": {"kms:ViaService": f"s3.{context.region}.amazonaws.com"},
        "ForAnyValue:StringEquals": {
            "kms:ResourceAliases": exchange_key_alias(context.federation_id)
        },
    }
    return [
        allow(
            "ReadGlobalModelsAndOwnRegistration",
            ["s3:GetObject"],
            [arns.global_models, arns.registry_of(site.site_id)],
        ),
        allow("WriteOwnUpdates", ["s3:PutObject"], [arns.updates_of(site.site_id)]),
        allow(
            "UseExchangeKeyViaS3",
            ["kms:Decrypt", "kms:GenerateDataKey"],
            [exchange_key_arns(context)],
            via_s3_with_exchange_alias,
        ),
    ]


def aggregator_exchange_statements(
    context: FederationContext, exchange_key_arn: str
) -> list[iam.PolicyStatement]:
    """The aggregator reads, lists and writes its federation's prefix; it deletes nothing."""
    arns = ExchangeArns(context)
    return [
        allow("ReadWriteFederationObjects", ["s3:GetObject", "s3:PutObject"], [arns.root]),
        allow(
            "ListFederationPrefix",
            ["s3:ListBucket"],
            [arns.bucket],
            {"StringLike": {"s3:prefix": f"{arns.layout.root}*"}},
        ),
        allow("UseExchangeKey", ["kms:Decrypt", "kms:GenerateDataKey"], [exchange_key_arn]),
    ]

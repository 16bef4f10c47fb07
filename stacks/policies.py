"""Who may touch the exchange: every policy statement of docs/design.md's IAM rule, in one place.

The rule: a hospital's task role may read what is public to the federation (each round's
``global.safetensors``, ``global.json``, ``global.secagg-{roster,setup,unmask}.json`` and
``result.json``, the ledger entries ``ledger/{round}.json``, and the federation's published
model ``published/model.{safetensors,json}``) and its own
``registry/{site_id}.json``, and write only its own canonical update keys (weights, manifest,
secure aggregation advert and answer, moments, preflight reports); it lists nothing and reads
no other hospital's update. Cross-account access needs both sides to agree, so the rule is
written twice, and either half alone is enough to stop a hospital:

* the hospital's identity policy (``hospital_identity_statements``) names its own site id
  literally; it lives in the hospital's account, so the hospital could widen it;
* the exchange's bucket and key policies (``hospital_bucket_statements``,
  ``hospital_key_statements``) live in the coordinating account and hold even against a
  hospital administrator who edits her own roles.

The keys are exact names, never prefixes (``fl_core.exchange.key_grammar``): IAM's ``*`` and
``?`` also match ``/``, so ``updates/{site}.*`` would also grant
``updates/{site}.x/{other}.json``, a channel between hospitals and a way to forge another's
preflight report. Each canonical suffix is spelled out, the round is ``??????``, and deny
statements for keys deeper than any canonical key keep every ``?`` and ``*`` within one
segment.

How the resource-side half scales to hundreds of hospitals (a bucket policy is limited to
20 KB, a key policy to 32 KB): one statement per hospital would cost far more than 20 KB for
200 hospitals. Instead ONE allow statement serves every hospital:

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
* The allow names the federation's prefix only: small deny statements, with no list, hold
  for every principal outside the coordinating account and spell out the exact keys (once:
  written in the allow too, they would push 208 hospitals over 20 KB). They confine it to
  GetObject/PutObject, to reading only the public keys and its registry entry, to
  writing only its canonical update keys, to no key deeper than those, to write-once puts
  (``If-None-Match``), and to SSE-KMS under the exchange key (an object under SSE-C or a key
  of the hospital's own could not be read by the aggregator). Allow and denies together grant
  exactly the rule.
* Offboarded hospitals (``revoked_hospitals``) are denied by role and, once no listed hospital
  remains in their account, by account: the statements ``fedsilo offboard`` writes into the
  live policies (``fedsilo.ops.revocation``), so a deploy keeps them.
"""

from __future__ import annotations

from aws_cdk import aws_iam as iam

from fedsilo.ops.regions import partition
from fedsilo.ops.revocation import (
    RevokedPrincipals,
    bucket_revocation_statements,
    key_revocation_statements,
)
from fl_core.exchange.key_grammar import ROUND_PATTERN, HospitalKeyPatterns, hospital_key_patterns
from fl_core.exchange.layout import ExchangeLayout
from stacks.context import (
    HOSPITAL_ROLE_PATH,
    SITE_TAG_KEY,
    FederationContext,
    SiteAccount,
    exchange_key_alias,
    hospital_role_arn,
    hospital_role_name,
)
from stacks.grants import allow

SITE_VARIABLE = f"${{aws:PrincipalTag/{SITE_TAG_KEY}}}"
"""IAM policy variable: the site id tag of the calling role (or of its session)."""


class ExchangeArns:
    """ARN patterns of one federation's exchange keys, for policies."""

    def __init__(self, context: FederationContext) -> None:
        self.layout = ExchangeLayout(context.federation_id)
        self.bucket = f"arn:{partition(context.region)}:s3:::{context.bucket_name}"

    def objects(self, key_pattern: str) -> str:
        return f"{self.bucket}/{key_pattern}"

    @property
    def root(self) -> str:
        return self.objects(f"{self.layout.root}*")

    @property
    def ledger(self) -> str:
        return self.objects(f"{self.layout.ledger_prefix()}*")

    def patterns_of(self, site: str, round_pattern: str = ROUND_PATTERN) -> HospitalKeyPatterns:
        """The exact keys ``site`` (an id or the site policy variable) may write and read."""
        return hospital_key_patterns(self.layout, site, round_pattern)

    def writes_of(self, site: str, round_pattern: str = ROUND_PATTERN) -> list[str]:
        return [self.objects(key) for key in self.patterns_of(site, round_pattern).writes]

    def reads_of(self, site: str, round_pattern: str = ROUND_PATTERN) -> list[str]:
        return [self.objects(key) for key in self.patterns_of(site, round_pattern).reads]


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


def hospital_bucket_statements(
    context: FederationContext, exchange_key_arn: str
) -> list[iam.PolicyStatement]:
    """Exchange bucket policy statements for all hospitals (see the module docstring)."""
    arns = ExchangeArns(context)
    patterns = arns.patterns_of(SITE_VARIABLE)
    get_put = ["s3:GetObject", "s3:PutObject"]
    put = ["s3:PutObject"]

    def deny_put(sid: str, conditions: dict[str, dict[str, str]]) -> iam.PolicyStatement:
        return _deny_outsiders(
            context, sid, actions=put, resources=[arns.objects("*")], conditions=conditions
        )

    return [
        iam.PolicyStatement(
            sid="ListedHospitalsGetAndPutFederationKeys",
            principals=[iam.AnyPrincipal()],
            actions=get_put,
            resources=[arns.root],
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
            "OutsidersReadOnlyPublicKeysAndOwnRegistry",
            actions=["s3:GetObject"],
            not_resources=arns.reads_of(SITE_VARIABLE),
        ),
        _deny_outsiders(
            context,
            "OutsidersWriteOnlyOwnUpdateKeys",
            actions=put,
            not_resources=arns.writes_of(SITE_VARIABLE),
        ),
        _deny_outsiders(
            context,
            "OutsidersReadNoNestedKey",
            actions=["s3:GetObject"],
            resources=[arns.objects(key) for key in patterns.nested_reads],
        ),
        _deny_outsiders(
            context,
            "OutsidersWriteNoNestedKey",
            actions=put,
            resources=[arns.objects(key) for key in patterns.nested_writes],
        ),
        deny_put(
            "OutsidersWriteOnce",
            {"Null": {"s3:if-none-match": "true"}, "Bool": {"s3:ObjectCreationOperation": "true"}},
        ),
        deny_put(
            "OutsidersWriteOnlySseKms",
            _present_but_not("s3:x-amz-server-side-encryption", "aws:kms"),
        ),
        deny_put(
            "OutsidersWriteOnlyUnderTheExchangeKey",
            _present_but_not("s3:x-amz-server-side-encryption-aws-kms-key-id", exchange_key_arn),
        ),
        deny_put(  # aws:kms without a key id would mean the requester's aws/s3 key
            "OutsidersNameTheExchangeKeyWithSseKms",
            {
                "Null": {
                    "s3:x-amz-server-side-encryption": "false",
                    "s3:x-amz-server-side-encryption-aws-kms-key-id": "true",
                }
            },
        ),
        iam.PolicyStatement(
            sid="NoCustomerProvidedKeys",
            effect=iam.Effect.DENY,
            principals=[iam.AnyPrincipal()],
            actions=["s3:*"],
            resources=[arns.objects("*")],
            conditions={"Null": {"s3:x-amz-server-side-encryption-customer-algorithm": "false"}},
        ),
        *_from_json(
            bucket_revocation_statements(revoked_principals(context), arns.bucket, arns.layout.root)
        ),
    ]


def _present_but_not(key: str, value: str) -> dict[str, dict[str, str]]:
    """Conditions true when the request carries ``key`` with another value than ``value``
    (a negated operator alone would also be true when the key is absent)."""
    return {"Null": {key: "false"}, "StringNotEquals": {key: value}}


def revoked_principals(context: FederationContext) -> RevokedPrincipals:
    """The offboarded hospitals' roles, and their accounts where no listed hospital remains."""
    return RevokedPrincipals.of(
        [(site.site_id, site.account_id) for site in context.revoked_hospitals],
        [site.account_id for site in context.hospitals],
        lambda site_id, account_id: hospital_role_arn(
            context.federation_id, SiteAccount(site_id=site_id, account_id=account_id)
        ),
    )


def _from_json(statements: list[dict[str, object]]) -> list[iam.PolicyStatement]:
    return [iam.PolicyStatement.from_json(statement) for statement in statements]


def hospital_key_statements(context: FederationContext) -> list[iam.PolicyStatement]:
    """Exchange key policy statements: hospitals use the key only through S3, only for their
    exact keys.

    S3 calls KMS as the requester with the encryption context ``aws:s3:arn`` = the object's
    ARN (S3 Bucket Keys are off on the exchange bucket for exactly this reason), so the same
    exact object patterns as the bucket policy apply, and the same deny of nested keys keeps
    their wildcards within one segment. Decrypt serves reading (and multipart writes),
    GenerateDataKey serves writing; the bucket policy's denies stop the cross product (e.g.
    writing a global) before KMS is asked.
    """
    arns = ExchangeArns(context)
    patterns = arns.patterns_of(SITE_VARIABLE)
    object_arn = "kms:EncryptionContext:aws:s3:arn"
    outsider = {"StringNotEquals": {"aws:PrincipalAccount": context.coordinating_account}}
    return [
        iam.PolicyStatement(
            sid="HospitalsUseKeyOnlyViaS3ForTheirObjects",
            principals=[iam.AnyPrincipal()],
            actions=["kms:Decrypt", "kms:GenerateDataKey"],
            resources=["*"],
            conditions={
                **_listed_hospital(context),
                "StringEquals": {"kms:ViaService": f"s3.{context.region}.amazonaws.com"},
                "StringLike": {
                    object_arn: [*arns.reads_of(SITE_VARIABLE), *arns.writes_of(SITE_VARIABLE)]
                },
            },
        ),
        iam.PolicyStatement(
            sid="OutsidersNoNestedKey",
            effect=iam.Effect.DENY,
            principals=[iam.AnyPrincipal()],
            actions=["kms:Decrypt", "kms:GenerateDataKey"],
            resources=["*"],
            conditions={
                **outsider,
                "StringLike": {object_arn: [arns.objects(key) for key in patterns.nested]},
            },
        ),
        *_from_json(key_revocation_statements(revoked_principals(context))),
    ]


def hospital_identity_statements(
    context: FederationContext, site: SiteAccount
) -> list[iam.PolicyStatement]:
    """The hospital task role's own policy on the exchange: its site id, written literally.

    The round is ``*`` here, not ``??????``: the nested denies keep it within one segment, the
    bucket and key policies bound its length, and moto (which enforces this policy in the
    tests and the AWS demo) matches ``*`` but fails on ``?``.
    """
    arns = ExchangeArns(context)
    site_id, any_round = site.site_id, "*"
    patterns = arns.patterns_of(site_id, any_round)
    via_s3_with_exchange_alias = {
        "StringEquals": {"kms:ViaService": f"s3.{context.region}.amazonaws.com"},
        "ForAnyValue:StringEquals": {
            "kms:ResourceAliases": exchange_key_alias(context.federation_id)
        },
    }
    return [
        allow(
            "ReadPublicKeysAndOwnRegistration", ["s3:GetObject"], arns.reads_of(site_id, any_round)
        ),
        allow("WriteOwnUpdateKeys", ["s3:PutObject"], arns.writes_of(site_id, any_round)),
        iam.PolicyStatement(
            sid="ReadNoNestedKey",
            effect=iam.Effect.DENY,
            actions=["s3:GetObject"],
            resources=[arns.objects(key) for key in patterns.nested_reads],
        ),
        iam.PolicyStatement(
            sid="WriteNoNestedKey",
            effect=iam.Effect.DENY,
            actions=["s3:PutObject"],
            resources=[arns.objects(key) for key in patterns.nested_writes],
        ),
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
    """The aggregator reads, lists and writes its federation's prefix; it deletes nothing.

    It sets Object Lock retention on what it publishes (ledger entries, round results, global
    models) and reads the ledger's past versions to prove that none was replaced.
    """
    arns = ExchangeArns(context)
    ledger = arns.layout.ledger_prefix()
    return [
        allow("ReadWriteFederationObjects", ["s3:GetObject", "s3:PutObject"], [arns.root]),
        allow(
            "LockFederationObjects",
            ["s3:PutObjectRetention", "s3:GetObjectRetention"],
            [arns.root],
        ),
        allow(
            "ListFederationPrefix",
            ["s3:ListBucket"],
            [arns.bucket],
            {"StringLike": {"s3:prefix": f"{arns.layout.root}*"}},
        ),
        allow(
            "ListLedgerVersions",
            ["s3:ListBucketVersions"],
            [arns.bucket],
            {"StringLike": {"s3:prefix": f"{ledger}*"}},
        ),
        allow("ReadLedgerVersions", ["s3:GetObjectVersion"], [arns.ledger]),
        allow("UseExchangeKey", ["kms:Decrypt", "kms:GenerateDataKey"], [exchange_key_arn]),
    ]

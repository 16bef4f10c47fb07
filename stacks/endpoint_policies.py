"""VPC endpoint policies: only principals of the VPC's own account pass through an endpoint.

Code in a task that holds credentials of another account (stolen, or brought in by a hostile
dependency) could otherwise use them through the VPC's endpoints, e.g. to write data into a
bucket or a log group of that account. Every endpoint therefore admits only requests signed
by the VPC's own account (``aws:PrincipalAccount``); ECR and S3 further name the resources a
task needs.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import DefaultStackSynthesizer, Stack
from aws_cdk import aws_iam as iam
from constructs import IConstruct

from stacks.context import ECR_IMAGE_PATTERN, FederationContext

BOOTSTRAP_QUALIFIER_CONTEXT = "@aws-cdk/core:bootstrapQualifier"

ECR_PULL_ACTIONS = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
]


def own_account(scope: IConstruct) -> dict[str, dict[str, str]]:
    """The condition that the request is signed by a principal of the stack's account."""
    return {"StringEquals": {"aws:PrincipalAccount": Stack.of(scope).account}}


def image_repository_arns(scope: IConstruct, context: FederationContext) -> list[str]:
    """The ECR repositories the federation's tasks pull from.

    A pinned image names its repository (possibly in another account); an image built at
    deploy lives in the CDK bootstrap's asset repository of the stack's own account.
    """
    stack = Stack.of(scope)
    arns = set()
    for pinned in (context.images.client, context.images.server):
        match = ECR_IMAGE_PATTERN.fullmatch(pinned) if pinned is not None else None
        if match is None:
            qualifier = (
                stack.node.try_get_context(BOOTSTRAP_QUALIFIER_CONTEXT)
                or DefaultStackSynthesizer.DEFAULT_QUALIFIER
            )
            name = f"cdk-{qualifier}-container-assets-{stack.account}-{stack.region}"
            arns.add(f"arn:{stack.partition}:ecr:{stack.region}:{stack.account}:repository/{name}")
        else:
            arns.add(
                f"arn:{stack.partition}:ecr:{match['region']}:{match['account']}"
                f":repository/{match['repository']}"
            )
    return sorted(arns)


def any_call_of_own_account(scope: IConstruct) -> list[iam.PolicyStatement]:
    """An endpoint's policy for a service whose calls name no resource worth pinning."""
    return [
        iam.PolicyStatement(
            sid="OwnAccountOnly",
            principals=[iam.AnyPrincipal()],
            actions=["*"],
            resources=["*"],
            conditions=own_account(scope),
        )
    ]


def ecr_pulls_of_own_account(
    scope: IConstruct, repository_arns: Sequence[str]
) -> list[iam.PolicyStatement]:
    """ECR's endpoints: an authorization token, then pulls from the task images' repositories."""
    return [
        iam.PolicyStatement(
            sid="OwnAccountAuthorizationToken",
            principals=[iam.AnyPrincipal()],
            actions=["ecr:GetAuthorizationToken"],
            resources=["*"],
            conditions=own_account(scope),
        ),
        iam.PolicyStatement(
            sid="OwnAccountPullsTaskImages",
            principals=[iam.AnyPrincipal()],
            actions=ECR_PULL_ACTIONS,
            resources=list(repository_arns),
            conditions=own_account(scope),
        ),
    ]


FEDERATION_BUCKET_ACTIONS = [
    "s3:GetObject",
    "s3:GetObjectRetention",
    "s3:GetObjectVersion",
    "s3:ListBucket",
    "s3:ListBucketVersions",
    "s3:PutObject",
    "s3:PutObjectRetention",
]
"""Every S3 action a federation task role holds (the roles' own policies decide which)."""


def s3_statements(scope: IConstruct, bucket_arns: Sequence[str]) -> list[iam.PolicyStatement]:
    """The S3 gateway: the federation's buckets for this account, and ECR's image layers.

    ECR serves layers from its own bucket through URLs that ECR signs, so that statement
    cannot name the caller's account; it allows only reading that one AWS-owned bucket.
    """
    stack = Stack.of(scope)
    return [
        iam.PolicyStatement(
            sid="FederationBuckets",
            principals=[iam.AnyPrincipal()],
            actions=FEDERATION_BUCKET_ACTIONS,
            resources=[arn for bucket in bucket_arns for arn in (bucket, f"{bucket}/*")],
            conditions=own_account(scope),
        ),
        iam.PolicyStatement(
            sid="EcrImageLayers",
            principals=[iam.AnyPrincipal()],
            actions=["s3:GetObject"],
            resources=[f"arn:{stack.partition}:s3:::prod-{stack.region}-starport-layer-bucket/*"],
        ),
    ]

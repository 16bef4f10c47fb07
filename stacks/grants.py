"""The one way a task role gets rights that CDK's ``grant_*`` methods cannot express.

The exchange lives in another account (hospitals) or must be limited to one prefix
(aggregator), so those rights are written as statements and attached as a customer managed
policy that a hospital's security officer can read on its own. Every wildcard resource in it
is acknowledged for cdk-nag's ``AwsSolutions-IAM5`` on the policy, with its reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.nag import acknowledge


def allow(
    sid: str,
    actions: Sequence[str],
    resources: Sequence[str],
    conditions: Mapping[str, Mapping[str, object]] | None = None,
) -> iam.PolicyStatement:
    """An identity-policy statement that allows ``actions`` on ``resources``."""
    return iam.PolicyStatement(
        sid=sid, actions=list(actions), resources=list(resources), conditions=conditions
    )


def grant_managed_policy(
    scope: Construct,
    construct_id: str,
    *,
    role: iam.IRole,
    description: str,
    statements: Sequence[iam.PolicyStatement],
    wildcard_reasons: Mapping[str, str],
) -> iam.ManagedPolicy:
    """Attach ``statements`` to ``role`` as one managed policy ``construct_id``.

    ``wildcard_reasons`` maps each resource that contains a wildcard, as cdk-nag prints it
    (``<LogicalId.Arn>/*`` for a token), to why that wildcard is no wider than the rule.
    """
    policy = iam.ManagedPolicy(
        scope, construct_id, description=description, roles=[role], statements=list(statements)
    )
    for resource, reason in wildcard_reasons.items():
        acknowledge(policy, f"AwsSolutions-IAM5[Resource::{resource}]", reason)
    return policy

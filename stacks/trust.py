"""Service-role trusts confined to this account's own resources (no confused deputy).

A role that trusts an AWS service principal alone can be used by that service on behalf of any
account that passes it; ``aws:SourceAccount`` and ``aws:SourceArn`` make the service prove that
it acts for a resource of this account. CDK writes some service roles itself (flow logs, the
trail's CloudWatch role, a task's execution role); their trust is confined after the fact.
"""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from constructs import IConstruct


def source_conditions(source_account: str, source_arn: str) -> dict[str, dict[str, str]]:
    """The trust condition: a request from this account, for a resource matching ``source_arn``."""
    return {
        "StringEquals": {"aws:SourceAccount": source_account},
        "ArnLike": {"aws:SourceArn": source_arn},
    }


def ecs_source_arn(scope: IConstruct) -> str:
    """Any ECS resource (task, service, cluster) of the stack's account and region."""
    stack = Stack.of(scope)
    return f"arn:{stack.partition}:ecs:{stack.region}:{stack.account}:*"


def confine_generated_trust(role: IConstruct, source_arn: str) -> None:
    """Add the source conditions to the one trust statement of a role that CDK generated.

    The override leaves the role's logical id, and so the deployed role, as it is.
    """
    cfn_role = role.node.default_child
    if not isinstance(cfn_role, iam.CfnRole):
        raise TypeError(f"{role.node.path} is not an IAM role")
    account = Stack.of(role).account
    cfn_role.add_property_override(
        "AssumeRolePolicyDocument.Statement.0.Condition", source_conditions(account, source_arn)
    )

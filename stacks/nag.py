"""Acknowledging a cdk-nag finding or a checkov check: always on one resource, with a reason.

There is deliberately no helper for a stack or an app: a blanket acknowledgment would hide the
next resource that breaks the rule.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnResource, Validations
from constructs import IConstruct

CHECKOV_METADATA = "checkov"
"""The template ``Metadata`` key under which checkov looks for a resource's skips."""


def acknowledge(resource: IConstruct, rule_id: str, reason: str) -> None:
    """Record that ``rule_id`` (``Pack-Rule`` or ``Pack-Rule[Finding]``) is accepted here.

    ``reason`` is read by a hospital's security officer: it says why the rule does not apply or
    what compensates, never "not needed".
    """
    if len(reason) < 40:
        raise ValueError(f"acknowledging {rule_id} needs a real reason, got {reason!r}")
    Validations.of(resource).acknowledge(Acknowledgment(id=rule_id, reason=reason))


CDK_INLINE_POLICY_REASON = (
    "CDK writes this role's least-privilege grants (each naming this stack's own resources) "
    "as an inline policy that lives and dies with the role, so it can never be attached to "
    "another principal; a customer managed policy would add nothing but reuse."
)


def acknowledge_generated_policy(role: IConstruct) -> None:
    """Acknowledge HIPAA's inline-policy rule on one role whose policy CDK generates."""
    acknowledge(role, "HIPAA.Security-IAMNoInlinePolicy", CDK_INLINE_POLICY_REASON)


def skip_checkov(resource: IConstruct, check_id: str, comment: str) -> None:
    """Record in ``resource``'s template ``Metadata`` that checkov's ``check_id`` is accepted.

    checkov reads ``Metadata.checkov.skip`` of each resource; ``resource`` is the L1
    (``CfnResource``) or an L2 whose default child is one. ``comment`` meets the same bar as an
    acknowledgment's reason.
    """
    if len(comment) < 40:
        raise ValueError(f"skipping checkov's {check_id} needs a real reason, got {comment!r}")
    cfn = resource if isinstance(resource, CfnResource) else resource.node.default_child
    if not isinstance(cfn, CfnResource):
        raise TypeError(f"{resource.node.path} has no CloudFormation resource to annotate")
    existing = cfn.get_metadata(CHECKOV_METADATA) or {"skip": []}
    skips = [entry for entry in existing["skip"] if entry["id"] != check_id]
    cfn.add_metadata(CHECKOV_METADATA, {"skip": [*skips, {"id": check_id, "comment": comment}]})

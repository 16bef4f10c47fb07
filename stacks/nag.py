"""Acknowledging a cdk-nag finding: always on one resource, always with a reason.

There is deliberately no helper for a stack or an app: a blanket acknowledgment would hide the
next resource that breaks the rule.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct


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

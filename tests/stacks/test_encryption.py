"""``stacks.encryption`` alone in a bare stack: the key rotates and is kept, services may use it
only for this account's log groups and this trail, and log groups are encrypted under it."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import aws_logs as logs
from aws_cdk.assertions import Match, Template
from iamsim import simulate
from stackhelpers import BARE_ACCOUNT, BARE_REGION, bare_stack, render, resources_of

from stacks.encryption import FederationKey, encrypted_log_group

TRAIL = "fedsilo-test-trail"
KEY_ARN = f"arn:aws:kms:{BARE_REGION}:{BARE_ACCOUNT}:key/0000-test"
OWN_LOG_GROUP = f"arn:aws:logs:{BARE_REGION}:{BARE_ACCOUNT}:log-group:flows"
OTHER_ACCOUNT = "999999999999"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    stack = bare_stack()
    key = FederationKey(stack, "Ops", alias="alias/fedsilo-test-ops", description="test key")
    key.allow_cloudwatch_logs()
    key.allow_cloudtrail(TRAIL)
    encrypted_log_group(stack, "Logs", key=key.key, retention=logs.RetentionDays.ONE_YEAR)
    return Template.from_stack(stack).to_json()  # type: ignore[no-any-return]


def only(template: dict[str, Any], resource_type: str) -> tuple[str, dict[str, Any]]:
    (found,) = resources_of(template, resource_type).items()
    return found


def test_the_key_rotates_waits_30_days_before_deletion_and_outlives_the_stack(
    template: dict[str, Any],
) -> None:
    Template.from_json(template).has_resource(
        "AWS::KMS::Key",
        {
            "Properties": Match.object_like({"EnableKeyRotation": True, "PendingWindowInDays": 30}),
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
        },
    )
    _, alias = only(template, "AWS::KMS::Alias")
    assert alias["Properties"]["AliasName"] == "alias/fedsilo-test-ops"


def test_a_log_group_is_encrypted_under_the_key_and_kept(template: dict[str, Any]) -> None:
    key_id, _ = only(template, "AWS::KMS::Key")
    _, group = only(template, "AWS::Logs::LogGroup")
    assert group["Properties"]["KmsKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert group["Properties"]["RetentionInDays"] == 365
    assert group["DeletionPolicy"] == "Retain"


def service_request(
    policy: dict[str, Any], service: str, action: str, context: dict[str, Any]
) -> dict[str, Any]:
    return {
        "request": {
            "principal": service,
            "action": action,
            "resource": {"resource": KEY_ARN, "accountId": BARE_ACCOUNT},
            "contextVariables": context,
        },
        "identityPolicies": [],
        "serviceControlPolicies": [],
        "resourceControlPolicies": [],
        "resourcePolicy": policy,
    }


def test_services_may_use_the_key_for_this_account_only(template: dict[str, Any]) -> None:
    _, key = only(template, "AWS::KMS::Key")
    policy = render(
        key["Properties"]["KeyPolicy"], template, account=BARE_ACCOUNT, region=BARE_REGION
    )
    logs_service = f"logs.{BARE_REGION}.amazonaws.com"
    own_trail = f"arn:aws:cloudtrail:{BARE_REGION}:{BARE_ACCOUNT}:trail/{TRAIL}"
    other_trail = f"arn:aws:cloudtrail:{BARE_REGION}:{BARE_ACCOUNT}:trail/another"
    foreign_group = OWN_LOG_GROUP.replace(BARE_ACCOUNT, OTHER_ACCOUNT)
    logs_context = "kms:EncryptionContext:aws:logs:arn"
    trail_context = "kms:EncryptionContext:aws:cloudtrail:arn"
    table = [
        ("Allowed", logs_service, "kms:Encrypt", {logs_context: OWN_LOG_GROUP}),
        ("ImplicitlyDenied", logs_service, "kms:Encrypt", {logs_context: foreign_group}),
        ("ImplicitlyDenied", logs_service, "kms:ScheduleKeyDeletion", {}),
        (
            "Allowed",
            "cloudtrail.amazonaws.com",
            "kms:GenerateDataKey",
            {"aws:SourceArn": own_trail, trail_context: own_trail},
        ),
        (
            "ImplicitlyDenied",
            "cloudtrail.amazonaws.com",
            "kms:GenerateDataKey",
            {"aws:SourceArn": other_trail, trail_context: other_trail},
        ),
        (
            "ImplicitlyDenied",
            "cloudtrail.amazonaws.com",
            "kms:Decrypt",
            {"aws:SourceArn": own_trail},
        ),
    ]
    answers = simulate([service_request(policy, s, a, c) for _, s, a, c in table])
    assert answers == [expected for expected, *_ in table]

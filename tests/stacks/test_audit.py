"""``stacks.audit.AuditTrail`` alone in a bare stack: a multi-region, validated, encrypted trail
that records data events of the buckets it is given, with a logs role only CloudTrail's own
trail may assume."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import aws_logs as logs
from aws_cdk.assertions import Template
from stackhelpers import BARE_ACCOUNT, BARE_REGION, bare_stack, render, resources_of

from stacks.audit import AuditTrail
from stacks.encryption import FederationKey
from stacks.storage import AccessLogBucket, EncryptedBucket

TRAIL = "fedsilo-test-trail"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    stack = bare_stack()
    key = FederationKey(stack, "Ops", alias="alias/fedsilo-test-ops", description="test key")
    access_logs = AccessLogBucket(stack, "AccessLogs", retention_days=90).bucket
    watched = EncryptedBucket(
        stack, "Watched", key=key.key, access_logs=access_logs, noncurrent_retention_days=30
    )
    trail = AuditTrail(
        stack,
        "Audit",
        trail_name=TRAIL,
        key=key,
        access_logs=access_logs,
        log_retention=logs.RetentionDays.ONE_YEAR,
        noncurrent_retention_days=30,
    )
    trail.record_data_events(watched.bucket)
    return Template.from_stack(stack).to_json()  # type: ignore[no-any-return]


def only(template: dict[str, Any], resource_type: str) -> tuple[str, dict[str, Any]]:
    (found,) = resources_of(template, resource_type).items()
    return found


def test_the_trail_covers_every_region_validates_its_files_and_is_encrypted(
    template: dict[str, Any],
) -> None:
    key_id, _ = only(template, "AWS::KMS::Key")
    _, trail = only(template, "AWS::CloudTrail::Trail")
    properties = trail["Properties"]
    assert properties["TrailName"] == TRAIL
    assert properties["IsMultiRegionTrail"] is True
    assert properties["IncludeGlobalServiceEvents"] is True
    assert properties["EnableLogFileValidation"] is True
    assert properties["IsLogging"] is True
    assert properties["KMSKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    (group_id,) = (
        logical_id
        for logical_id in resources_of(template, "AWS::Logs::LogGroup")
        if logical_id.startswith("AuditTrailLogs")
    )
    assert properties["CloudWatchLogsLogGroupArn"] == {"Fn::GetAtt": [group_id, "Arn"]}


def test_data_events_of_the_watched_bucket_are_recorded_reads_and_writes(
    template: dict[str, Any],
) -> None:
    _, trail = only(template, "AWS::CloudTrail::Trail")
    (watched_id,) = (
        logical_id
        for logical_id in resources_of(template, "AWS::S3::Bucket")
        if logical_id.startswith("WatchedBucket")
    )
    selectors = trail["Properties"]["EventSelectors"]
    assert {"IncludeManagementEvents": True, "ReadWriteType": "All"} in selectors
    (data,) = (s for s in selectors if "DataResources" in s)
    assert data["ReadWriteType"] == "All"
    assert data["DataResources"] == [
        {
            "Type": "AWS::S3::Object",
            "Values": [{"Fn::Join": ["", [{"Fn::GetAtt": [watched_id, "Arn"]}, "/"]]}],
        }
    ]


def test_the_trail_bucket_is_encrypted_under_the_key_and_kept(template: dict[str, Any]) -> None:
    key_id, _ = only(template, "AWS::KMS::Key")
    _, trail = only(template, "AWS::CloudTrail::Trail")
    bucket_id = trail["Properties"]["S3BucketName"]["Ref"]
    bucket = template["Resources"][bucket_id]
    (rule,) = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] == {
        "Fn::GetAtt": [key_id, "Arn"]
    }
    assert bucket["DeletionPolicy"] == "Retain"
    group = template["Resources"][trail["Properties"]["CloudWatchLogsLogGroupArn"]["Fn::GetAtt"][0]]
    assert group["Properties"]["KmsKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert group["Properties"]["RetentionInDays"] == 365


def test_only_this_trail_may_assume_its_logs_role(template: dict[str, Any]) -> None:
    _, trail = only(template, "AWS::CloudTrail::Trail")
    role_id = trail["Properties"]["CloudWatchLogsRoleArn"]["Fn::GetAtt"][0]
    trust = render(
        template["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"],
        template,
        account=BARE_ACCOUNT,
        region=BARE_REGION,
    )
    (statement,) = trust["Statement"]
    assert statement["Principal"] == {"Service": "cloudtrail.amazonaws.com"}
    assert statement["Condition"] == {
        "StringEquals": {"aws:SourceAccount": BARE_ACCOUNT},
        "ArnLike": {
            "aws:SourceArn": f"arn:aws:cloudtrail:{BARE_REGION}:{BARE_ACCOUNT}:trail/{TRAIL}"
        },
    }

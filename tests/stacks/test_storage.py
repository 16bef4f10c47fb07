"""``stacks.storage`` alone in a bare stack: every bucket private, versioned, kept and TLS only;
the encrypted ones under the customer key with SSE-C refused; access logs delivered only for
this stack's buckets; the exchange's policy refused when S3 would refuse it."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from aws_cdk import aws_kms as kms
from aws_cdk.assertions import Template
from iamsim import ALLOW_EVERYTHING, simulate
from stackhelpers import (
    BARE_ACCOUNT,
    BARE_REGION,
    bare_stack,
    cdk_json_context,
    hospitals_context,
    render,
    resources_of,
)

from fl_core.errors import ConfigError
from stacks.context import parse_context
from stacks.storage import AccessLogBucket, EncryptedBucket, ExchangeBucket

OWN_ROLE = f"arn:aws:iam::{BARE_ACCOUNT}:role/operator"
OUTSIDER_ROLE = "arn:aws:iam::999999999999:role/anyone"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    stack = bare_stack()
    key = kms.Key(stack, "Key")
    access_logs = AccessLogBucket(stack, "AccessLogs", retention_days=90)
    EncryptedBucket(
        stack, "Models", key=key, access_logs=access_logs.bucket, noncurrent_retention_days=30
    )
    context = parse_context(cdk_json_context())
    ExchangeBucket(stack, "Exchange", context=context, key=key, access_logs=access_logs.bucket)
    return Template.from_stack(stack).to_json()  # type: ignore[no-any-return]


def bucket(template: dict[str, Any], prefix: str) -> tuple[str, dict[str, Any]]:
    (found,) = (
        (logical_id, resource)
        for logical_id, resource in resources_of(template, "AWS::S3::Bucket").items()
        if logical_id.startswith(f"{prefix}Bucket")
    )
    return found


def encryption(resource: dict[str, Any]) -> dict[str, Any]:
    (rule,) = resource["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    return rule  # type: ignore[no-any-return]


def test_every_bucket_is_private_versioned_without_acls_and_kept(template: dict[str, Any]) -> None:
    buckets = resources_of(template, "AWS::S3::Bucket")
    assert len(buckets) == 3
    for resource in buckets.values():
        properties = resource["Properties"]
        assert properties["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
        assert properties["OwnershipControls"]["Rules"] == [
            {"ObjectOwnership": "BucketOwnerEnforced"}
        ]
        assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Retain"


def test_the_access_log_bucket_is_s3_managed_and_expires_its_logs(
    template: dict[str, Any],
) -> None:
    _, access_logs = bucket(template, "AccessLogs")
    assert encryption(access_logs)["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    (rule,) = access_logs["Properties"]["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == 90 and rule["Status"] == "Enabled"
    assert "LoggingConfiguration" not in access_logs["Properties"]  # never logs into itself


@pytest.mark.parametrize(("prefix", "bucket_key"), [("Models", True), ("Exchange", False)])
def test_encrypted_buckets_use_the_key_refuse_sse_c_and_log_their_access(
    template: dict[str, Any], prefix: str, bucket_key: bool
) -> None:
    (key_id,) = resources_of(template, "AWS::KMS::Key")
    access_logs_id, _ = bucket(template, "AccessLogs")
    _, resource = bucket(template, prefix)
    rule = encryption(resource)
    assert rule["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": {"Fn::GetAtt": [key_id, "Arn"]},
    }
    assert rule["BucketKeyEnabled"] is bucket_key  # off on the exchange: per-object context
    assert rule["BlockedEncryptionTypes"] == {"EncryptionType": ["SSE-C"]}
    assert resource["Properties"]["LoggingConfiguration"] == {
        "DestinationBucketName": {"Ref": access_logs_id},
        "LogFilePrefix": f"{prefix}/",
    }


def test_the_exchange_is_named_by_the_context_and_locks_objects(template: dict[str, Any]) -> None:
    _, exchange = bucket(template, "Exchange")
    assert exchange["Properties"]["BucketName"] == parse_context(cdk_json_context()).bucket_name
    assert exchange["Properties"]["ObjectLockEnabled"] is True
    assert "ObjectLockConfiguration" not in exchange["Properties"]  # no default retention


def rendered(template: dict[str, Any], value: Any) -> Any:
    return render(value, template, account=BARE_ACCOUNT, region=BARE_REGION)


def bucket_policy(template: dict[str, Any], bucket_id: str) -> dict[str, Any]:
    (policy,) = (
        resource["Properties"]["PolicyDocument"]
        for resource in resources_of(template, "AWS::S3::BucketPolicy").values()
        if resource["Properties"]["Bucket"] == {"Ref": bucket_id}
    )
    return rendered(template, copy.deepcopy(policy))  # type: ignore[no-any-return]


def s3_request(
    policy: dict[str, Any],
    principal: str,
    action: str,
    resource: str,
    context: dict[str, Any],
    identity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "request": {
            "principal": principal,
            "action": action,
            "resource": {"resource": resource, "accountId": BARE_ACCOUNT},
            "contextVariables": context,
        },
        "identityPolicies": [] if identity is None else [{"name": "all", "policy": identity}],
        "serviceControlPolicies": [],
        "resourceControlPolicies": [],
        "resourcePolicy": policy,
    }


def test_bucket_policies_refuse_plain_http_and_outsiders_and_admit_log_delivery_only_for_ours(
    template: dict[str, Any],
) -> None:
    requests: list[tuple[str, dict[str, Any]]] = []
    for prefix in ("AccessLogs", "Models", "Exchange"):
        bucket_id, _ = bucket(template, prefix)
        policy = bucket_policy(template, bucket_id)
        arn = rendered(template, {"Fn::GetAtt": [bucket_id, "Arn"]})
        own = {"aws:PrincipalAccount": BARE_ACCOUNT, "aws:PrincipalArn": OWN_ROLE}
        for secure, expected in (("false", "ExplicitlyDenied"), ("true", "Allowed")):
            if prefix == "Exchange" and secure == "true":
                continue  # who may read the exchange is the hospital statements' (policies)
            context = {**own, "aws:SecureTransport": secure}
            request = s3_request(
                policy, OWN_ROLE, "s3:GetObject", f"{arn}/k", context, ALLOW_EVERYTHING
            )
            requests.append((expected, request))
        outsider = {
            "aws:PrincipalAccount": "999999999999",
            "aws:PrincipalArn": OUTSIDER_ROLE,
            "aws:SecureTransport": "true",
        }
        outside = s3_request(
            policy, OUTSIDER_ROLE, "s3:GetObject", f"{arn}/k", outsider, ALLOW_EVERYTHING
        )
        requests.append(("not Allowed", outside))
    access_logs_id, _ = bucket(template, "AccessLogs")
    models_id, _ = bucket(template, "Models")
    logs_policy = bucket_policy(template, access_logs_id)
    logs_arn = rendered(template, {"Fn::GetAtt": [access_logs_id, "Arn"]})
    for source, expected in (
        (rendered(template, {"Fn::GetAtt": [models_id, "Arn"]}), "Allowed"),
        ("arn:aws:s3:::somebody-elses-bucket", "ImplicitlyDenied"),
    ):
        context = {
            "aws:SourceArn": source,
            "aws:SourceAccount": BARE_ACCOUNT,
            "aws:SecureTransport": "true",
        }
        delivery = s3_request(
            logs_policy,
            "logging.s3.amazonaws.com",
            "s3:PutObject",
            f"{logs_arn}/Models/log",
            context,
        )
        requests.append((expected, delivery))
    answers = simulate([request for _, request in requests])
    for (expected, request), answer in zip(requests, answers, strict=True):
        where = (request["request"]["principal"], request["request"]["resource"]["resource"])
        if expected == "not Allowed":
            assert answer != "Allowed", where
        else:
            assert answer == expected, where


def test_an_exchange_policy_over_the_s3_limit_stops_synthesis() -> None:
    stack = bare_stack("TooMany")
    key = kms.Key(stack, "Key")
    access_logs = AccessLogBucket(stack, "AccessLogs", retention_days=90)
    context = parse_context(hospitals_context(400))
    with pytest.raises(ConfigError, match="over S3's 20480; shorten federation_id"):
        ExchangeBucket(stack, "Exchange", context=context, key=key, access_logs=access_logs.bucket)

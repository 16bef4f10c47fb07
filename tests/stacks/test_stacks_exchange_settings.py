"""The exchange bucket's Object Lock and encryption settings, the aggregator's retention rights,
the context settings behind them, and the policy sizes of a 208-hospital federation."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template
from iamsim import aggregator_resources
from stackhelpers import Federation, hospitals_context, resources_of, synthesise_aggregator

from fl_core.errors import ConfigError
from stacks.context import parse_context
from stacks.policies import ExchangeArns
from stacks.storage import BUCKET_POLICY_LIMIT_BYTES

KEY_POLICY_LIMIT_BYTES = 32 * 1024
LARGE = 208


def test_the_exchange_bucket_locks_objects_without_a_default_and_refuses_sse_c(
    federation: Federation,
) -> None:
    template = federation.template_json(federation.aggregator)
    [bucket] = [
        r["Properties"]
        for r in resources_of(template, "AWS::S3::Bucket").values()
        if r["Properties"].get("BucketName") == federation.context.bucket_name
    ]
    assert bucket["ObjectLockEnabled"] is True
    assert "ObjectLockConfiguration" not in bucket  # the aggregator locks object by object
    [rule] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["BlockedEncryptionTypes"] == {"EncryptionType": ["SSE-C"]}
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"


def test_the_aggregator_sets_retention_and_reads_ledger_versions_only(
    federation: Federation, aggregator_template: Template
) -> None:
    arns = ExchangeArns(federation.context)
    ledger = arns.layout.ledger_prefix()
    aggregator_template.has_resource_properties(
        "AWS::IAM::ManagedPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Sid": "LockFederationObjects",
                                "Action": ["s3:PutObjectRetention", "s3:GetObjectRetention"],
                                "Resource": arns.root,
                            }
                        ),
                        Match.object_like(
                            {
                                "Sid": "ListLedgerVersions",
                                "Action": "s3:ListBucketVersions",
                                "Condition": {"StringLike": {"s3:prefix": f"{ledger}*"}},
                            }
                        ),
                        Match.object_like(
                            {
                                "Sid": "ReadLedgerVersions",
                                "Action": "s3:GetObjectVersion",
                                "Resource": arns.ledger,
                            }
                        ),
                    ]
                )
            }
        },
    )
    text = json.dumps(federation.template_json(federation.aggregator))
    assert "s3:BypassGovernanceRetention" not in text
    assert "s3:DeleteObject" not in text


def environment(federation: Federation, stack: Any) -> dict[str, str]:
    template = federation.template_json(stack)
    [task] = resources_of(template, "AWS::ECS::TaskDefinition").values()
    return {
        variable["Name"]: variable["Value"]
        for container in task["Properties"]["ContainerDefinitions"]
        for variable in container.get("Environment", [])
    }


def test_the_aggregator_task_is_told_the_ledger_retention(federation: Federation) -> None:
    assert environment(federation, federation.aggregator)["FEDSILO_LEDGER_RETENTION_DAYS"] == (
        str(federation.context.ledger_retention_days)
    )
    assert "FEDSILO_LEDGER_RETENTION_DAYS" not in environment(federation, federation.hospitals[0])


def test_ledger_retention_defaults_to_six_years(raw_context: dict[str, Any]) -> None:
    assert parse_context(raw_context).ledger_retention_days == 2190
    assert parse_context({**raw_context, "ledger_retention_days": 30}).ledger_retention_days == 30
    with pytest.raises(ConfigError, match="ledger_retention_days"):
        parse_context({**raw_context, "ledger_retention_days": 0})


def test_a_revoked_site_is_neither_listed_nor_the_coordinating_account(
    raw_context: dict[str, Any],
) -> None:
    listed = copy.deepcopy(raw_context)
    listed["revoked_hospitals"] = [raw_context["hospitals"][0]]
    with pytest.raises(ConfigError, match=r"revoked_hospitals\.0\.site_id .* also in hospitals"):
        parse_context(listed)
    centre = copy.deepcopy(raw_context)
    centre["revoked_hospitals"] = [
        {"site_id": "site-z", "account_id": raw_context["coordinating_account"]}
    ]
    with pytest.raises(ConfigError, match=r"revoked_hospitals\.0\.account_id"):
        parse_context(centre)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("coordinating_account", "\uff11" * 12),  # full-width digits
        ("coordinating_account", "\u0661" * 12),  # Arabic-Indic digits
        ("region", "eu-west-\u0661"),
        ("federation_id", "eicu-mort\u0430lity"),  # Cyrillic a
        ("images", {"server": "\uff11" * 12 + ".dkr.ecr.eu-west-1.amazonaws.com/s:v1"}),
    ],
)
def test_every_id_is_ascii(raw_context: dict[str, Any], field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=field):
        parse_context({**raw_context, field: value})


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    raw = hospitals_context(LARGE)
    raw["revoked_hospitals"] = [
        {"site_id": f"gone-{index:03d}", "account_id": f"{300000000000 + index}"}
        for index in range(8)
    ]
    return synthesise_aggregator(raw, Path(tmp_path_factory.mktemp("cdk-out-208")))


def test_208_hospitals_and_8_revoked_fit_the_policy_limits(large: Federation) -> None:
    out = aggregator_resources(large)
    [bucket_policy] = [
        r["Properties"]["PolicyDocument"]
        for r in resources_of(out, "AWS::S3::BucketPolicy").values()
        if r["Properties"]["Bucket"] == large.context.bucket_name
    ]
    [key_policy] = [
        r["Properties"]["KeyPolicy"]
        for r in resources_of(out, "AWS::KMS::Key").values()
        if "exchange" in r["Properties"]["Description"]
    ]
    bucket_bytes = len(json.dumps(bucket_policy, separators=(",", ":")))
    key_bytes = len(json.dumps(key_policy, separators=(",", ":")))
    print(f"{LARGE} hospitals: bucket policy {bucket_bytes} B, key policy {key_bytes} B")
    assert 13_000 < bucket_bytes < BUCKET_POLICY_LIMIT_BYTES
    assert 13_000 < key_bytes < KEY_POLICY_LIMIT_BYTES

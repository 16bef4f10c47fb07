"""A 200-hospital federation synthesises, and its policies stay inside AWS's size limits."""

from __future__ import annotations

import json
from typing import Any

import pytest
from stackhelpers import Federation, hospitals_context, render, resources_of, synthesise

from stacks.storage import BUCKET_POLICY_LIMIT_BYTES

HOSPITALS = 200
KEY_POLICY_LIMIT_BYTES = 32 * 1024


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    return synthesise(hospitals_context(HOSPITALS), tmp_path_factory.mktemp("cdk-out-200"))


def policy_sizes(federation: Federation) -> dict[str, int]:
    ctx = federation.context
    template = federation.template_json(federation.aggregator)
    resources: dict[str, Any] = render(
        template["Resources"], template, account=ctx.coordinating_account, region=ctx.region
    )
    sizes = {}
    out = {"Resources": resources}
    for logical_id, policy in resources_of(out, "AWS::S3::BucketPolicy").items():
        sizes[logical_id] = len(
            json.dumps(policy["Properties"]["PolicyDocument"], separators=(",", ":"))
        )
    for logical_id, key in resources_of(out, "AWS::KMS::Key").items():
        sizes[logical_id] = len(json.dumps(key["Properties"]["KeyPolicy"], separators=(",", ":")))
    return sizes


def test_200_hospitals_synthesise_one_stack_each(large: Federation) -> None:
    assert len(large.hospitals) == HOSPITALS
    assert len(large.template_files()) == HOSPITALS + 1
    accounts = {stack.account for stack in large.hospitals}
    assert len(accounts) == HOSPITALS


def test_200_hospitals_fit_the_bucket_and_key_policy_limits(large: Federation) -> None:
    sizes = policy_sizes(large)
    bucket_policies = {k: v for k, v in sizes.items() if "BucketPolicy" in k}
    key_policies = {k: v for k, v in sizes.items() if "BucketPolicy" not in k}
    assert max(bucket_policies.values()) < BUCKET_POLICY_LIMIT_BYTES, bucket_policies
    assert max(key_policies.values()) < KEY_POLICY_LIMIT_BYTES, key_policies
    exchange = [v for k, v in bucket_policies.items() if k.startswith("Exchange")]
    assert exchange and exchange[0] > 10_000  # it really lists all 200 role ARNs

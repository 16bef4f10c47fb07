"""``stacks.grants`` alone in a bare stack: a role gets exactly the statements it is granted,
as one customer managed policy, and nothing beside them."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Template
from iamsim import simulate
from stackhelpers import BARE_ACCOUNT, BARE_REGION, bare_stack, render, resources_of

from stacks.grants import allow, grant_managed_policy

ROLE = f"arn:aws:iam::{BARE_ACCOUNT}:role/worker"
BUCKET = "arn:aws:s3:::exchange-bucket"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    stack = bare_stack()
    role = iam.Role(stack, "Worker", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"))
    grant_managed_policy(
        stack,
        "ReadRounds",
        role=role,
        description="read the rounds, nothing else",
        statements=[
            allow("ReadRounds", ["s3:GetObject"], [f"{BUCKET}/rounds/*"]),
            allow(
                "ListRounds",
                ["s3:ListBucket"],
                [BUCKET],
                {"StringLike": {"s3:prefix": ["rounds/*"]}},
            ),
        ],
        wildcard_reasons={
            f"{BUCKET}/rounds/*": "every object of the rounds prefix: the global models the "
            "worker reads, and no other prefix of the bucket"
        },
    )
    return Template.from_stack(stack).to_json()  # type: ignore[no-any-return]


def test_the_statements_are_one_managed_policy_on_the_role(template: dict[str, Any]) -> None:
    (role_id,) = resources_of(template, "AWS::IAM::Role")
    (policy,) = resources_of(template, "AWS::IAM::ManagedPolicy").values()
    assert policy["Properties"]["Roles"] == [{"Ref": role_id}]
    assert policy["Properties"]["Description"] == "read the rounds, nothing else"
    assert resources_of(template, "AWS::IAM::Policy") == {}  # no inline grant beside it
    assert "ManagedPolicyArns" not in template["Resources"][role_id]["Properties"]


def test_the_role_may_do_what_it_was_granted_and_nothing_more(template: dict[str, Any]) -> None:
    (policy,) = resources_of(template, "AWS::IAM::ManagedPolicy").values()
    document = render(
        policy["Properties"]["PolicyDocument"], template, account=BARE_ACCOUNT, region=BARE_REGION
    )
    table = [
        ("Allowed", "s3:GetObject", f"{BUCKET}/rounds/000001/global.safetensors", {}),
        ("ImplicitlyDenied", "s3:GetObject", f"{BUCKET}/keys/site-a", {}),
        ("ImplicitlyDenied", "s3:PutObject", f"{BUCKET}/rounds/000001/x", {}),
        ("Allowed", "s3:ListBucket", BUCKET, {"s3:prefix": "rounds/000001/"}),
        ("ImplicitlyDenied", "s3:ListBucket", BUCKET, {"s3:prefix": "keys/"}),
    ]
    simulations = [
        {
            "request": {
                "principal": ROLE,
                "action": action,
                "resource": {"resource": resource, "accountId": BARE_ACCOUNT},
                "contextVariables": {"aws:PrincipalAccount": BARE_ACCOUNT, **context},
            },
            "identityPolicies": [{"name": "granted", "policy": document}],
            "serviceControlPolicies": [],
            "resourceControlPolicies": [],
        }
        for _, action, resource, context in table
    ]
    assert simulate(simulations) == [expected for expected, *_ in table]

"""``stacks.network.PrivateNetwork`` alone in a bare stack: no route out, flow logs encrypted,
endpoints that answer HTTPS from workloads only and admit only this account's principals."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import aws_kms as kms
from aws_cdk.assertions import Template
from stackhelpers import BARE_ACCOUNT, BARE_REGION, bare_network, bare_stack, resources_of

from stacks.network import NO_EGRESS

EXCHANGE = "arn:aws:s3:::exchange-bucket"
REPOSITORY = f"arn:aws:ecr:{BARE_REGION}:{BARE_ACCOUNT}:repository/fedsilo"
OWN_ACCOUNT_ONLY = {"StringEquals": {"aws:PrincipalAccount": BARE_ACCOUNT}}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    stack = bare_stack()
    key = kms.Key(stack, "Key")
    network = bare_network(stack, key, with_ecs_instances=True, with_parameters=True)
    workload = network.workload_security_group(stack, "Workload", description="a workload")
    network.admit_to_endpoints(workload)
    network.limit_s3_to([EXCHANGE])
    network.limit_endpoints_to_own_account([REPOSITORY])
    return Template.from_stack(stack).to_json()  # type: ignore[no-any-return]


def test_nothing_routes_to_the_internet(template: dict[str, Any]) -> None:
    types = {resource["Type"] for resource in template["Resources"].values()}
    assert not types & {
        "AWS::EC2::InternetGateway",
        "AWS::EC2::NatGateway",
        "AWS::EC2::EgressOnlyInternetGateway",
        "AWS::EC2::VPCGatewayAttachment",
        "AWS::EC2::EIP",
    }
    routes = resources_of(template, "AWS::EC2::Route")
    assert routes == {}
    subnets = resources_of(template, "AWS::EC2::Subnet").values()
    assert len(subnets) == 2
    assert all(s["Properties"]["MapPublicIpOnLaunch"] is False for s in subnets)


def test_all_traffic_is_logged_to_a_group_under_the_key(template: dict[str, Any]) -> None:
    (key_id,) = resources_of(template, "AWS::KMS::Key")
    (flow_log,) = resources_of(template, "AWS::EC2::FlowLog").values()
    assert flow_log["Properties"]["TrafficType"] == "ALL"
    group = template["Resources"][flow_log["Properties"]["LogGroupName"]["Ref"]]
    assert group["Properties"]["KmsKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert group["DeletionPolicy"] == "Retain"


def endpoints(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource
        for logical_id, resource in resources_of(template, "AWS::EC2::VPCEndpoint").items()
        if resource["Properties"]["VpcEndpointType"] == kind
    }


def test_endpoints_send_nothing_and_answer_https_from_the_workload_only(
    template: dict[str, Any],
) -> None:
    interface = endpoints(template, "Interface")
    assert len(interface) == 4 + 3 + 1  # base, ECS instances, SSM parameters
    groups = {
        resource["Properties"]["SecurityGroupIds"][0]["Fn::GetAtt"][0]
        for resource in interface.values()
    }
    for group_id in groups:
        assert template["Resources"][group_id]["Properties"]["SecurityGroupEgress"] == NO_EGRESS
    (workload_id,) = (
        g for g in resources_of(template, "AWS::EC2::SecurityGroup") if g.startswith("Workload")
    )
    ingress = resources_of(template, "AWS::EC2::SecurityGroupIngress").values()
    assert {rule["Properties"]["GroupId"]["Fn::GetAtt"][0] for rule in ingress} == groups
    for rule in ingress:
        assert rule["Properties"]["SourceSecurityGroupId"] == {
            "Fn::GetAtt": [workload_id, "GroupId"]
        }
        assert (rule["Properties"]["FromPort"], rule["Properties"]["ToPort"]) == (443, 443)
    workload = template["Resources"][workload_id]["Properties"]
    assert "SecurityGroupIngress" not in workload
    assert [(r["FromPort"], r["ToPort"]) for r in workload["SecurityGroupEgress"]] == [(443, 443)]


def test_every_endpoint_admits_this_accounts_principals_only(template: dict[str, Any]) -> None:
    for logical_id, resource in endpoints(template, "Interface").items():
        statements = resource["Properties"]["PolicyDocument"]["Statement"]
        assert statements, logical_id
        for statement in statements:
            assert statement["Effect"] == "Allow"
            assert statement["Condition"] == OWN_ACCOUNT_ONLY, logical_id
        if "Ecr" in logical_id:
            pulls = [s for s in statements if s["Resource"] != "*"]
            assert [s["Resource"] for s in pulls] == [REPOSITORY]
            assert all(not a.startswith("ecr:Put") for s in statements for a in s["Action"])


def test_s3_through_the_gateway_reaches_the_exchange_and_ecr_layers_only(
    template: dict[str, Any],
) -> None:
    (gateway,) = endpoints(template, "Gateway").values()
    statements = {s["Sid"]: s for s in gateway["Properties"]["PolicyDocument"]["Statement"]}
    assert set(statements) == {"FederationBuckets", "EcrImageLayers"}
    buckets = statements["FederationBuckets"]
    assert buckets["Resource"] == [EXCHANGE, f"{EXCHANGE}/*"]
    assert buckets["Condition"] == OWN_ACCOUNT_ONLY
    assert not any(
        a in buckets["Action"] for a in ("s3:*", "s3:DeleteObject", "s3:PutBucketPolicy")
    )
    layers = statements["EcrImageLayers"]
    assert layers["Action"] == "s3:GetObject"
    assert "starport-layer-bucket/*" in str(layers["Resource"])

"""The perimeter a hospital's security officer reads in the templates of every stack.

Endpoints admit only the stack's own account, tasks cannot reach the instance role, run with a
read-only root and no capabilities, send HTTPS only, every service role names its source, and
the trail covers every region.
"""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import Stack
from stackhelpers import Federation, render, resources_of

from stacks.compute import BLOCK_TASK_IMDS, SCRATCH_ENVIRONMENT, SCRATCH_PATH
from stacks.context import parse_context
from stacks.endpoint_policies import ECR_PULL_ACTIONS, image_repository_arns

VARIANTS = ["federation", "gpu_federation"]


def stacks_of(federation: Federation) -> list[tuple[dict[str, Any], str]]:
    """Each template with the account it deploys into."""
    return [
        (federation.template_json(stack), stack.account)
        for stack in [federation.aggregator, *federation.hospitals]
    ]


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    found = document["Statement"]
    return found if isinstance(found, list) else [found]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_endpoint_admits_only_its_own_accounts_principals(
    variant: str, request: pytest.FixtureRequest
) -> None:
    federation: Federation = request.getfixturevalue(variant)
    for template, account in stacks_of(federation):
        endpoints = resources_of(template, "AWS::EC2::VPCEndpoint")
        assert len(endpoints) >= 5
        for logical_id, endpoint in endpoints.items():
            document = render(
                endpoint["Properties"].get("PolicyDocument"),
                template,
                account=account,
                region=federation.context.region,
            )
            assert document, f"{logical_id} has no endpoint policy"
            for statement in statements(document):
                assert statement["Effect"] == "Allow", statement
                if statement.get("Sid") == "EcrImageLayers":  # ECR signs these URLs itself
                    assert as_list(statement["Action"]) == ["s3:GetObject"], statement
                    assert as_list(statement["Resource"]) == [
                        f"arn:aws:s3:::prod-{federation.context.region}-starport-layer-bucket/*"
                    ]
                    continue
                condition = statement["Condition"]["StringEquals"]
                assert condition == {"aws:PrincipalAccount": account}, (logical_id, statement)


def asset_repositories(federation: Federation, stack: Stack) -> set[str]:
    """The ECR repositories ``cdk deploy`` pushes the stack's images to (its asset manifest)."""
    manifest = json.loads((federation.outdir / f"{stack.artifact_id}.assets.json").read_text())
    return {
        destination["repositoryName"]
        for image in manifest["dockerImages"].values()
        for destination in image["destinations"].values()
    }


def test_ecr_endpoints_pull_only_the_task_images_repository(federation: Federation) -> None:
    """Images built at deploy: the CDK asset repository of the stack's own account."""
    for stack in [federation.aggregator, *federation.hospitals]:
        template, account = federation.template_json(stack), stack.account
        region = federation.context.region
        (name,) = asset_repositories(federation, stack)
        repository = f"arn:aws:ecr:{region}:{account}:repository/{name}"
        ecr = [
            render(e["Properties"]["PolicyDocument"], template, account=account, region=region)
            for e in resources_of(template, "AWS::EC2::VPCEndpoint").values()
            if "ecr" in json.dumps(e["Properties"]["ServiceName"])
        ]
        assert len(ecr) == 2
        for document in ecr:
            pulls = [s for s in statements(document) if s["Sid"] == "OwnAccountPullsTaskImages"]
            assert [as_list(s["Resource"]) for s in pulls] == [[repository]]
            assert sorted(pulls[0]["Action"]) == sorted(ECR_PULL_ACTIONS)
            others = [s for s in statements(document) if s["Sid"] != "OwnAccountPullsTaskImages"]
            assert [s["Action"] for s in others] == ["ecr:GetAuthorizationToken"]


def test_gpu_instances_keep_tasks_away_from_the_instance_metadata(
    federation: Federation,
) -> None:
    template = federation.template_json(federation.hospitals[0])
    (launch_template,) = resources_of(template, "AWS::EC2::LaunchTemplate").values()
    data = launch_template["Properties"]["LaunchTemplateData"]
    assert data["MetadataOptions"] == {"HttpPutResponseHopLimit": 1, "HttpTokens": "required"}
    user_data = json.dumps(data["UserData"])
    assert f"echo {BLOCK_TASK_IMDS} >> /etc/ecs/ecs.config" in user_data


@pytest.mark.parametrize("variant", VARIANTS)
def test_containers_run_read_only_without_capabilities_and_write_to_scratch(
    variant: str, request: pytest.FixtureRequest
) -> None:
    federation: Federation = request.getfixturevalue(variant)
    seen_ec2 = 0
    for template, _ in stacks_of(federation):
        for task in resources_of(template, "AWS::ECS::TaskDefinition").values():
            props = task["Properties"]
            (container,) = props["ContainerDefinitions"]
            assert container["ReadonlyRootFilesystem"] is True
            assert container["LinuxParameters"]["Capabilities"] == {"Drop": ["ALL"]}
            scratch = [v["Name"] for v in props["Volumes"] if set(v) == {"Name"}]
            assert [m for m in container["MountPoints"] if m["ContainerPath"] == SCRATCH_PATH] == [
                {"ContainerPath": SCRATCH_PATH, "ReadOnly": False, "SourceVolume": scratch[0]}
            ]
            environment = {e["Name"]: e["Value"] for e in container["Environment"]}
            assert SCRATCH_ENVIRONMENT.items() <= environment.items()
            if props.get("RequiresCompatibilities") == ["FARGATE"]:
                assert "DockerSecurityOptions" not in container  # Fargate refuses them
            else:
                seen_ec2 += 1
                assert container["DockerSecurityOptions"] == ["no-new-privileges"]
    assert seen_ec2 == len(federation.hospitals) + (variant == "gpu_federation")


@pytest.mark.parametrize("variant", VARIANTS)
def test_security_groups_send_https_only_and_nfs_only_to_the_state_volume(
    variant: str, request: pytest.FixtureRequest
) -> None:
    federation: Federation = request.getfixturevalue(variant)
    for template, _ in stacks_of(federation):
        efs_groups = {
            group["Fn::GetAtt"][0]
            for target in resources_of(template, "AWS::EFS::MountTarget").values()
            for group in target["Properties"]["SecurityGroups"]
        }
        for logical_id, group in resources_of(template, "AWS::EC2::SecurityGroup").items():
            for rule in group["Properties"]["SecurityGroupEgress"]:
                if rule["IpProtocol"] == "icmp":  # CDK's placeholder for "no outbound rule"
                    assert rule["CidrIp"] == "255.255.255.255/32", (logical_id, rule)
                    continue
                assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == (
                    "tcp",
                    443,
                    443,
                ), (logical_id, rule)
        for rule in resources_of(template, "AWS::EC2::SecurityGroupEgress").values():
            props = rule["Properties"]
            target = props["DestinationSecurityGroupId"]["Fn::GetAtt"][0]
            port = 2049 if target in efs_groups else 443
            assert (props["IpProtocol"], props["FromPort"], props["ToPort"]) == (
                "tcp",
                port,
                port,
            ), props


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_service_role_names_its_source_account_and_resource(
    variant: str, request: pytest.FixtureRequest
) -> None:
    """EC2 is the exception: it sets no source keys, and only this account passes the role."""
    federation: Federation = request.getfixturevalue(variant)
    checked = 0
    for template, account in stacks_of(federation):
        for logical_id, role in resources_of(template, "AWS::IAM::Role").items():
            document = render(
                role["Properties"]["AssumeRolePolicyDocument"],
                template,
                account=account,
                region=federation.context.region,
            )
            for statement in statements(document):
                if statement["Principal"] == {"Service": "ec2.amazonaws.com"}:
                    continue
                checked += 1
                condition = statement["Condition"]
                assert condition["StringEquals"] == {"aws:SourceAccount": account}, logical_id
                source_arn = condition["ArnLike"]["aws:SourceArn"]
                assert source_arn.startswith("arn:aws:"), (logical_id, source_arn)
                assert f":{account}:" in source_arn, (logical_id, source_arn)
    # per hospital: task, execution and flow-log roles; the aggregator adds its trail's role
    assert checked == 3 * (1 + len(federation.hospitals)) + 1


def test_trail_covers_every_region_with_validated_log_files(federation: Federation) -> None:
    template = federation.template_json(federation.aggregator)
    (trail,) = resources_of(template, "AWS::CloudTrail::Trail").values()
    assert trail["Properties"]["IsMultiRegionTrail"] is True
    assert trail["Properties"]["EnableLogFileValidation"] is True


def test_pinned_images_name_their_own_repositories(raw_context: dict[str, Any]) -> None:
    """A pinned image may live in another account (e.g. the coordinating centre's registry)."""
    raw = dict(raw_context)
    raw["images"] = {
        "client": "444444444444.dkr.ecr.eu-west-1.amazonaws.com/fedsilo/client:1.4.0",
        "server": f"444444444444.dkr.ecr.eu-west-1.amazonaws.com/fedsilo/server@sha256:{'a' * 64}",
    }
    stack = cdk.Stack(cdk.App(), "Probe", env=cdk.Environment(account="222222222222"))
    arns = [stack.resolve(arn) for arn in image_repository_arns(stack, parse_context(raw))]
    no_resources: dict[str, Any] = {"Resources": {}}
    assert render(arns, no_resources, account="222222222222", region="eu-west-1") == [
        "arn:aws:ecr:eu-west-1:444444444444:repository/fedsilo/client",
        "arn:aws:ecr:eu-west-1:444444444444:repository/fedsilo/server",
    ]


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_s3_endpoint_lets_through_every_s3_action_a_role_holds(
    variant: str, request: pytest.FixtureRequest
) -> None:
    """The endpoint is a ceiling: an action the roles need but it lacks fails only when deployed
    (e.g. the aggregator's Object Lock retention on ledger entries)."""
    federation: Federation = request.getfixturevalue(variant)
    for template, _ in stacks_of(federation):
        granted = {
            action
            for kind in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy")
            for policy in resources_of(template, kind).values()
            for statement in statements(policy["Properties"]["PolicyDocument"])
            if statement["Effect"] == "Allow"
            for action in as_list(statement["Action"])
            if action.startswith("s3:")
        }
        (gateway,) = [
            e
            for e in resources_of(template, "AWS::EC2::VPCEndpoint").values()
            if e["Properties"].get("VpcEndpointType") == "Gateway"
        ]
        (buckets,) = [
            s
            for s in statements(gateway["Properties"]["PolicyDocument"])
            if s["Sid"] == "FederationBuckets"
        ]
        assert granted
        assert granted <= set(as_list(buckets["Action"]))

"""``stacks.compute`` alone in a bare stack: a cluster with Container Insights, GPU capacity that
idles at zero on the ECS GPU AMI, and one fedsilo service on it and one on Fargate, each private,
read-only and unprivileged, logging under the key, with an execution role that pulls its image
and writes its log group and nothing else, and a task role the construct grants nothing."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk.assertions import Template
from iamsim import simulate
from stackhelpers import BARE_ACCOUNT, BARE_REGION, bare_network, bare_stack, render, resources_of

from stacks.compute import (
    BLOCK_TASK_IMDS,
    ECS_AGENT_CONFIG,
    ECS_AGENT_POLICY,
    SCRATCH_ENVIRONMENT,
    SCRATCH_PATH,
    SCRATCH_VOLUME,
    FederationCluster,
    FederationService,
    GpuCapacity,
    log_retention,
    task_role,
)
from stacks.context import LOG_RETENTION_CHOICES

INSTANCE_TYPE = "g5.xlarge"
MAX_INSTANCES = 2
ROOT_VOLUME_GIB = 100
REPOSITORY = "fedsilo-client"
REPOSITORY_ARN = f"arn:aws:ecr:{BARE_REGION}:{BARE_ACCOUNT}:repository/{REPOSITORY}"
OTHER_ACCOUNT = "999999999999"
GPU_AMI_PARAMETER = "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
AGENT_CALLS_ON_ALL_RESOURCES = {
    "ecs:DiscoverPollEndpoint",
    "ecr:GetAuthorizationToken",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
}
"""What the agent's role holds on every resource: calls IAM defines on all resources only, and
log writes that reach only this account's Logs endpoint."""
SERVICES = ("OnGpu", "OnFargate")
"""The two services' construct ids: one on the GPU capacity, one on Fargate."""


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    stack = bare_stack()
    key = kms.Key(stack, "Key")
    network = bare_network(stack, key, with_ecs_instances=True)
    cluster = FederationCluster(stack, "Compute", network=network)
    capacity = GpuCapacity(
        stack,
        "Capacity",
        cluster=cluster,
        instance_type=INSTANCE_TYPE,
        max_instances=MAX_INSTANCES,
        root_volume_gib=ROOT_VOLUME_GIB,
        ebs_key=key,
    )
    repository = ecr.Repository.from_repository_attributes(
        stack, "Repository", repository_arn=REPOSITORY_ARN, repository_name=REPOSITORY
    )
    for construct_id, gpu in zip(SERVICES, (capacity, None), strict=True):
        FederationService(
            stack,
            construct_id,
            cluster=cluster,
            image=ecs.ContainerImage.from_ecr_repository(repository, "v1"),
            command=["client", "run"],
            environment={"FEDSILO_SITE_ID": "site-a"},
            role=task_role(stack, f"{construct_id}Role", description=f"task {construct_id}"),
            logs_key=key,
            log_retention=logs.RetentionDays.ONE_YEAR,
            desired_count=1,
            cpu_units=1024,
            memory_mib=4096,
            gpu_capacity=gpu,
        )
    for days in LOG_RETENTION_CHOICES:
        logs.LogGroup(stack, f"Retention{days}Days", retention=log_retention(days))
    return Template.from_stack(stack).to_json()  # type: ignore[no-any-return]


def one(template: dict[str, Any], resource_type: str, prefix: str) -> tuple[str, dict[str, Any]]:
    """The one resource of ``resource_type`` whose logical id starts with ``prefix``."""
    (found,) = (
        (logical_id, resource)
        for logical_id, resource in resources_of(template, resource_type).items()
        if logical_id.startswith(prefix)
    )
    return found


def container(template: dict[str, Any], service: str) -> dict[str, Any]:
    _, task = one(template, "AWS::ECS::TaskDefinition", f"{service}Task")
    (definition,) = task["Properties"]["ContainerDefinitions"]
    return definition  # type: ignore[no-any-return]


def test_the_cluster_has_enhanced_container_insights(template: dict[str, Any]) -> None:
    _, cluster = one(template, "AWS::ECS::Cluster", "Compute")
    assert cluster["Properties"]["ClusterSettings"] == [
        {"Name": "containerInsights", "Value": "enhanced"}
    ]


def test_gpu_instances_boot_the_ecs_gpu_ami_with_imdsv2_and_an_encrypted_disk(
    template: dict[str, Any],
) -> None:
    key_id, _ = one(template, "AWS::KMS::Key", "Key")
    _, launch_template = one(template, "AWS::EC2::LaunchTemplate", "Capacity")
    data = launch_template["Properties"]["LaunchTemplateData"]
    assert data["InstanceType"] == INSTANCE_TYPE
    parameter = template["Parameters"][data["ImageId"]["Ref"]]
    assert parameter["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    assert parameter["Default"] == GPU_AMI_PARAMETER
    assert data["MetadataOptions"] == {"HttpTokens": "required", "HttpPutResponseHopLimit": 1}
    assert data["BlockDeviceMappings"] == [
        {
            "DeviceName": "/dev/xvda",
            "Ebs": {
                "DeleteOnTermination": True,
                "Encrypted": True,
                "KmsKeyId": {"Fn::GetAtt": [key_id, "Arn"]},
                "VolumeSize": ROOT_VOLUME_GIB,
                "VolumeType": "gp3",
            },
        }
    ]
    (interface,) = data["NetworkInterfaces"]
    assert interface["AssociatePublicIpAddress"] is False
    user_data = "".join(
        part for part in data["UserData"]["Fn::Base64"]["Fn::Join"][1] if isinstance(part, str)
    )
    assert f"echo {BLOCK_TASK_IMDS} >> {ECS_AGENT_CONFIG}" in user_data


def test_gpu_capacity_scales_from_zero_in_the_private_subnets_as_ecs_asks(
    template: dict[str, Any],
) -> None:
    group_id, group = one(template, "AWS::AutoScaling::AutoScalingGroup", "Capacity")
    properties = group["Properties"]
    assert properties["MinSize"] == "0"
    assert properties["MaxSize"] == str(MAX_INSTANCES)
    assert "DesiredCapacity" not in properties  # ECS's managed scaling sets it, from zero
    private_subnets = {
        logical_id
        for logical_id in resources_of(template, "AWS::EC2::Subnet")
        if "PrivateSubnet" in logical_id
    }
    assert {subnet["Ref"] for subnet in properties["VPCZoneIdentifier"]} == private_subnets
    provider_id, provider = one(template, "AWS::ECS::CapacityProvider", "Capacity")
    assert provider["Properties"]["AutoScalingGroupProvider"] == {
        "AutoScalingGroupArn": {"Ref": group_id},
        "ManagedScaling": {"Status": "ENABLED", "TargetCapacity": 100},
        "ManagedTerminationProtection": "ENABLED",
    }
    _, associations = one(template, "AWS::ECS::ClusterCapacityProviderAssociations", "Compute")
    assert associations["Properties"]["CapacityProviders"] == [{"Ref": provider_id}]


def test_the_instance_role_holds_the_agent_policy_and_ecs_calls_on_this_cluster_only(
    template: dict[str, Any],
) -> None:
    role_id, role = one(template, "AWS::IAM::Role", "CapacityInstanceRole")
    properties = role["Properties"]
    (trust,) = properties["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "ec2.amazonaws.com"}
    assert properties["ManagedPolicyArns"] == [
        {
            "Fn::Join": [
                "",
                ["arn:", {"Ref": "AWS::Partition"}, f":iam::aws:policy/{ECS_AGENT_POLICY}"],
            ]
        }
    ]
    _, policy = one(template, "AWS::IAM::Policy", "CapacityInstanceRole")
    assert policy["Properties"]["Roles"] == [{"Ref": role_id}]
    cluster_id, _ = one(template, "AWS::ECS::Cluster", "Compute")
    this_cluster = {"Fn::GetAtt": [cluster_id, "Arn"]}
    unscoped = set()
    for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"]
        if statement["Resource"] == this_cluster:
            continue
        assert statement["Resource"] == "*"
        if "Condition" in statement:
            assert statement["Condition"] == {"ArnEquals": {"ecs:cluster": this_cluster}}
        else:
            unscoped |= {actions} if isinstance(actions, str) else set(actions)
    assert unscoped <= AGENT_CALLS_ON_ALL_RESOURCES


def test_no_security_group_of_the_compute_admits_anything_or_sends_beyond_https(
    template: dict[str, Any],
) -> None:
    groups = {
        logical_id: group
        for logical_id, group in resources_of(template, "AWS::EC2::SecurityGroup").items()
        if logical_id.startswith(("Capacity", *SERVICES))
    }
    assert len(groups) == 3  # the instances' and each service's
    ingress = resources_of(template, "AWS::EC2::SecurityGroupIngress").values()
    admitted = {rule["Properties"]["GroupId"]["Fn::GetAtt"][0] for rule in ingress}
    assert not admitted & set(groups)
    egress = [
        rule["Properties"]
        for rule in resources_of(template, "AWS::EC2::SecurityGroupEgress").values()
        if rule["Properties"]["GroupId"]["Fn::GetAtt"][0] in groups
    ]
    for group in groups.values():
        assert "SecurityGroupIngress" not in group["Properties"]
        egress.extend(group["Properties"]["SecurityGroupEgress"])
    assert egress
    assert {(rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) for rule in egress} == {
        ("tcp", 443, 443)
    }


@pytest.mark.parametrize("service", SERVICES)
def test_the_container_runs_read_only_without_capabilities_and_writes_to_scratch(
    template: dict[str, Any], service: str
) -> None:
    definition = container(template, service)
    assert definition["ReadonlyRootFilesystem"] is True
    assert definition["LinuxParameters"] == {
        "Capabilities": {"Drop": ["ALL"]},
        "InitProcessEnabled": True,
    }
    assert "User" not in definition  # the image's non-root USER applies
    assert "Privileged" not in definition
    assert definition["MountPoints"] == [
        {"ContainerPath": SCRATCH_PATH, "ReadOnly": False, "SourceVolume": SCRATCH_VOLUME}
    ]
    _, task = one(template, "AWS::ECS::TaskDefinition", f"{service}Task")
    assert task["Properties"]["Volumes"] == [{"Name": SCRATCH_VOLUME}]
    environment = {e["Name"]: e["Value"] for e in definition["Environment"]}
    assert environment.items() >= {**SCRATCH_ENVIRONMENT, "FEDSILO_SITE_ID": "site-a"}.items()
    assert "Secrets" not in definition


def test_the_gpu_container_takes_one_gpu_and_no_new_privileges_on_ec2(
    template: dict[str, Any],
) -> None:
    definition = container(template, "OnGpu")
    assert definition["ResourceRequirements"] == [{"Type": "GPU", "Value": "1"}]
    assert definition["DockerSecurityOptions"] == ["no-new-privileges"]
    assert definition["Memory"] == 4096
    _, task = one(template, "AWS::ECS::TaskDefinition", "OnGpuTask")
    assert task["Properties"]["RequiresCompatibilities"] == ["EC2"]
    assert task["Properties"]["NetworkMode"] == "awsvpc"


def test_the_fargate_task_is_sized_at_task_level_without_a_gpu(template: dict[str, Any]) -> None:
    definition = container(template, "OnFargate")
    assert "ResourceRequirements" not in definition
    _, task = one(template, "AWS::ECS::TaskDefinition", "OnFargateTask")
    properties = task["Properties"]
    assert (properties["Cpu"], properties["Memory"]) == ("1024", "4096")
    assert properties["RequiresCompatibilities"] == ["FARGATE"]
    assert properties["RuntimePlatform"] == {
        "CpuArchitecture": "X86_64",
        "OperatingSystemFamily": "LINUX",
    }


@pytest.mark.parametrize("service", SERVICES)
def test_the_service_is_private_and_runs_one_copy_at_most(
    template: dict[str, Any], service: str
) -> None:
    _, resource = one(template, "AWS::ECS::Service", f"{service}Service")
    properties = resource["Properties"]
    network = properties["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "DISABLED"
    assert {subnet["Ref"] for subnet in network["Subnets"]} == {
        logical_id
        for logical_id in resources_of(template, "AWS::EC2::Subnet")
        if "PrivateSubnet" in logical_id
    }
    group_id, _ = one(template, "AWS::EC2::SecurityGroup", f"{service}SecurityGroup")
    assert network["SecurityGroups"] == [{"Fn::GetAtt": [group_id, "GroupId"]}]
    deployment = properties["DeploymentConfiguration"]
    assert (deployment["MinimumHealthyPercent"], deployment["MaximumPercent"]) == (0, 100)
    assert deployment["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    assert "LoadBalancers" not in properties


def test_the_gpu_service_is_placed_on_the_gpu_capacity_provider(template: dict[str, Any]) -> None:
    provider_id, _ = one(template, "AWS::ECS::CapacityProvider", "Capacity")
    _, on_gpu = one(template, "AWS::ECS::Service", "OnGpuService")
    assert on_gpu["Properties"]["CapacityProviderStrategy"] == [
        {"CapacityProvider": {"Ref": provider_id}, "Weight": 1}
    ]
    assert "LaunchType" not in on_gpu["Properties"]
    _, on_fargate = one(template, "AWS::ECS::Service", "OnFargateService")
    assert on_fargate["Properties"]["LaunchType"] == "FARGATE"


@pytest.mark.parametrize("service", SERVICES)
def test_logs_go_to_the_services_own_encrypted_retained_group(
    template: dict[str, Any], service: str
) -> None:
    key_id, _ = one(template, "AWS::KMS::Key", "Key")
    group_id, group = one(template, "AWS::Logs::LogGroup", f"{service}Logs")
    assert group["Properties"] == {
        "KmsKeyId": {"Fn::GetAtt": [key_id, "Arn"]},
        "RetentionInDays": 365,
    }
    assert group["DeletionPolicy"] == group["UpdateReplacePolicy"] == "Retain"
    configuration = container(template, service)["LogConfiguration"]
    assert configuration["LogDriver"] == "awslogs"
    assert configuration["Options"]["awslogs-group"] == {"Ref": group_id}


def test_every_retention_choice_is_that_many_days_in_cloudwatch(template: dict[str, Any]) -> None:
    retained = {
        days: one(template, "AWS::Logs::LogGroup", f"Retention{days}Days")[1]["Properties"]
        for days in LOG_RETENTION_CHOICES
    }
    assert {days: p["RetentionInDays"] for days, p in retained.items()} == {
        days: days for days in LOG_RETENTION_CHOICES
    }


@pytest.mark.parametrize("service", SERVICES)
def test_the_construct_grants_the_task_role_nothing(template: dict[str, Any], service: str) -> None:
    role_id, role = one(template, "AWS::IAM::Role", f"{service}Role")
    assert "ManagedPolicyArns" not in role["Properties"]
    assert "Policies" not in role["Properties"]
    attached = [
        policy
        for policy_type in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
        for policy in resources_of(template, policy_type).values()
        if {"Ref": role_id} in policy["Properties"].get("Roles", [])
    ]
    assert attached == []
    _, task = one(template, "AWS::ECS::TaskDefinition", f"{service}Task")
    assert task["Properties"]["TaskRoleArn"] == {"Fn::GetAtt": [role_id, "Arn"]}


def rendered_policy(template: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The policy document of ``prefix``'s role, log groups named after their logical ids."""
    _, policy = one(template, "AWS::IAM::Policy", prefix)
    document: dict[str, Any] = render(
        policy["Properties"]["PolicyDocument"], template, account=BARE_ACCOUNT, region=BARE_REGION
    )
    for statement in document["Statement"]:
        resource = statement["Resource"]
        if isinstance(resource, str) and resource.endswith(".Arn"):
            statement["Resource"] = log_group_arn(resource.removesuffix(".Arn"))
    return document


def log_group_arn(logical_id: str) -> str:
    return f"arn:aws:logs:{BARE_REGION}:{BARE_ACCOUNT}:log-group:{logical_id.lower()}:*"


def request(
    principal: str,
    action: str,
    resource: str,
    *,
    identity: list[dict[str, Any]],
    resource_policy: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    simulation: dict[str, Any] = {
        "request": {
            "principal": principal,
            "action": action,
            "resource": {"resource": resource, "accountId": BARE_ACCOUNT},
            "contextVariables": context or {"aws:PrincipalAccount": BARE_ACCOUNT},
        },
        "identityPolicies": identity,
        "serviceControlPolicies": [],
        "resourceControlPolicies": [],
    }
    if resource_policy is not None:
        simulation["resourcePolicy"] = resource_policy
    return simulation


def test_the_execution_role_pulls_its_image_and_writes_its_logs_and_nothing_else(
    template: dict[str, Any],
) -> None:
    document = rendered_policy(template, "OnGpuTaskExecutionRole")
    identity = [{"name": "execution", "policy": document}]
    role = f"arn:aws:iam::{BARE_ACCOUNT}:role/execution"
    own_group = log_group_arn(one(template, "AWS::Logs::LogGroup", "OnGpuLogs")[0])
    other_group = log_group_arn(one(template, "AWS::Logs::LogGroup", "OnFargateLogs")[0])
    own_stream = own_group.replace(":*", ":log-stream:fedsilo/Fedsilo/task")
    other_stream = other_group.replace(":*", ":log-stream:fedsilo/Fedsilo/task")
    secret = f"arn:aws:secretsmanager:{BARE_REGION}:{BARE_ACCOUNT}:secret:fedsilo-AbCdEf"
    parameter = f"arn:aws:ssm:{BARE_REGION}:{BARE_ACCOUNT}:parameter/fedsilo/anything"
    table = [
        ("Allowed", "ecr:BatchGetImage", REPOSITORY_ARN),
        ("Allowed", "ecr:GetDownloadUrlForLayer", REPOSITORY_ARN),
        ("ImplicitlyDenied", "ecr:PutImage", REPOSITORY_ARN),
        ("ImplicitlyDenied", "ecr:BatchGetImage", REPOSITORY_ARN.replace(REPOSITORY, "other")),
        (
            "ImplicitlyDenied",
            "ecr:BatchGetImage",
            REPOSITORY_ARN.replace(BARE_ACCOUNT, OTHER_ACCOUNT),
        ),
        ("Allowed", "logs:PutLogEvents", own_stream),
        ("ImplicitlyDenied", "logs:PutLogEvents", other_stream),
        ("ImplicitlyDenied", "logs:DeleteLogGroup", own_group),
        ("ImplicitlyDenied", "secretsmanager:GetSecretValue", secret),
        ("ImplicitlyDenied", "ssm:GetParameters", parameter),
        ("ImplicitlyDenied", "s3:GetObject", "arn:aws:s3:::exchange-bucket/keys/site-b"),
    ]
    answers = simulate([request(role, a, r, identity=identity) for _, a, r in table])
    assert answers == [expected for expected, *_ in table]


@pytest.mark.parametrize("prefix", [f"{s}Role" for s in SERVICES] + ["OnGpuTaskExecutionRole"])
def test_only_ecs_tasks_of_this_account_assume_the_task_and_execution_roles(
    template: dict[str, Any], prefix: str
) -> None:
    _, role = one(template, "AWS::IAM::Role", prefix)
    trust = render(
        role["Properties"]["AssumeRolePolicyDocument"],
        template,
        account=BARE_ACCOUNT,
        region=BARE_REGION,
    )
    role_arn = f"arn:aws:iam::{BARE_ACCOUNT}:role/{prefix}"
    own_task = f"arn:aws:ecs:{BARE_REGION}:{BARE_ACCOUNT}:task/cluster/0123"
    foreign_task = own_task.replace(BARE_ACCOUNT, OTHER_ACCOUNT)
    table = [
        ("Allowed", "ecs-tasks.amazonaws.com", BARE_ACCOUNT, own_task),
        ("ImplicitlyDenied", "ecs-tasks.amazonaws.com", OTHER_ACCOUNT, foreign_task),
        ("ImplicitlyDenied", "ecs-tasks.amazonaws.com", BARE_ACCOUNT, foreign_task),
        ("ImplicitlyDenied", "ec2.amazonaws.com", BARE_ACCOUNT, own_task),
    ]
    simulations = [
        request(
            principal,
            "sts:AssumeRole",
            role_arn,
            identity=[],
            resource_policy=trust,
            context={"aws:SourceAccount": account, "aws:SourceArn": source},
        )
        for _, principal, account, source in table
    ]
    assert simulate(simulations) == [expected for expected, *_ in table]
    assert role["Properties"].get("MaxSessionDuration", 3600) <= 3600

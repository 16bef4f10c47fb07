"""HospitalStack: own data kept inside the account, GPU capacity at zero, a narrow task role."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk.assertions import Match, Template
from stackhelpers import Federation, resources_of

from stacks.context import HOSPITAL_ROLE_PATH, SITE_TAG_KEY, exchange_key_alias, hospital_role_name
from stacks.policies import ExchangeArns


def in_partition(arn_tail: str) -> dict[str, Any]:
    """An ARN as CDK writes it: ``arn:`` + the partition + ``arn_tail``."""
    return {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, arn_tail]]}


def test_task_role_is_named_tagged_and_trusted_only_by_this_accounts_ecs(
    federation: Federation, hospital_template: Template
) -> None:
    ctx, site = federation.context, federation.context.hospitals[0]
    own_ecs = f":ecs:{ctx.region}:{site.account_id}:*"
    hospital_template.has_resource_properties(
        "AWS::IAM::Role",
        {
            "RoleName": hospital_role_name(ctx.federation_id, site.site_id),
            "Path": HOSPITAL_ROLE_PATH,
            "Tags": Match.array_with([{"Key": SITE_TAG_KEY, "Value": site.site_id}]),
            "AssumeRolePolicyDocument": {
                "Statement": [
                    {
                        "Action": "sts:AssumeRole",
                        "Effect": "Allow",
                        "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                        "Condition": {
                            "StringEquals": {"aws:SourceAccount": site.account_id},
                            "ArnLike": {"aws:SourceArn": in_partition(own_ecs)},
                        },
                    }
                ],
                "Version": "2012-10-17",
            },
        },
    )


def test_task_role_uses_the_exchange_exactly_as_design_says(
    federation: Federation, hospital_template: Template
) -> None:
    ctx, site = federation.context, federation.context.hospitals[0]
    arns = ExchangeArns(ctx)
    hospital_template.has_resource_properties(
        "AWS::IAM::ManagedPolicy",
        {
            "Roles": [{"Ref": Match.any_value()}],
            "PolicyDocument": {
                "Statement": [
                    {
                        "Sid": "ReadPublicKeysAndOwnRegistration",
                        "Effect": "Allow",
                        "Action": "s3:GetObject",
                        "Resource": arns.reads_of(site.site_id, "*"),
                    },
                    {
                        "Sid": "WriteOwnUpdateKeys",
                        "Effect": "Allow",
                        "Action": "s3:PutObject",
                        "Resource": arns.writes_of(site.site_id, "*"),
                    },
                    Match.object_like({"Sid": "ReadNoNestedKey", "Effect": "Deny"}),
                    Match.object_like({"Sid": "WriteNoNestedKey", "Effect": "Deny"}),
                    {
                        "Sid": "UseExchangeKeyViaS3",
                        "Effect": "Allow",
                        "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                        "Resource": f"arn:aws:kms:{ctx.region}:{ctx.coordinating_account}:key/*",
                        "Condition": {
                            "StringEquals": {"kms:ViaService": f"s3.{ctx.region}.amazonaws.com"},
                            "ForAnyValue:StringEquals": {
                                "kms:ResourceAliases": exchange_key_alias(ctx.federation_id)
                            },
                        },
                    },
                    Match.object_like({"Sid": "ReadOwnTrainingData", "Action": "s3:GetObject"}),
                    Match.object_like({"Sid": "ListOwnTrainingData", "Action": "s3:ListBucket"}),
                    Match.object_like({"Sid": "DecryptOwnTrainingData", "Action": "kms:Decrypt"}),
                ],
                "Version": "2012-10-17",
            },
        },
    )


def test_nothing_outside_the_account_is_granted_on_hospital_resources(
    federation: Federation,
) -> None:
    for stack, site in zip(federation.hospitals, federation.context.hospitals, strict=True):
        template = federation.template_json(stack)
        documents = [
            r["Properties"]["PolicyDocument"]
            for r in resources_of(template, "AWS::S3::BucketPolicy").values()
        ]
        documents += [
            r["Properties"]["KeyPolicy"] for r in resources_of(template, "AWS::KMS::Key").values()
        ]
        for document in documents:
            for statement in document["Statement"]:
                if statement["Effect"] != "Allow":
                    continue
                principal = json.dumps(statement["Principal"])
                assert '"*"' not in principal, statement
                accounts = {
                    a for a in ("111111111111", "222222222222", "333333333333") if a in principal
                }
                assert accounts <= {site.account_id}, statement


def test_gpu_capacity_scales_to_zero_on_the_gpu_ami_with_imdsv2_and_encrypted_disks(
    federation: Federation, hospital_template: Template
) -> None:
    settings = federation.context.hospital
    hospital_template.has_resource_properties(
        "AWS::AutoScaling::AutoScalingGroup",
        {"MinSize": "0", "MaxSize": str(settings.max_instances)},
    )
    hospital_template.has_resource_properties(
        "AWS::EC2::LaunchTemplate",
        {
            "LaunchTemplateData": Match.object_like(
                {
                    "InstanceType": settings.instance_type,
                    "MetadataOptions": Match.object_like({"HttpTokens": "required"}),
                    "BlockDeviceMappings": [
                        Match.object_like({"Ebs": Match.object_like({"Encrypted": True})})
                    ],
                    "NetworkInterfaces": [Match.object_like({"AssociatePublicIpAddress": False})],
                }
            )
        },
    )
    template = federation.template_json(federation.hospitals[0])
    ami_parameters = [
        p for p in template["Parameters"].values() if "gpu" in str(p.get("Default", ""))
    ]
    assert ami_parameters, "the launch template must use the ECS GPU-optimised AMI"
    hospital_template.has_resource_properties(
        "AWS::ECS::CapacityProvider",
        {
            "AutoScalingGroupProvider": Match.object_like(
                {"ManagedScaling": Match.object_like({"Status": "ENABLED", "TargetCapacity": 100})}
            )
        },
    )


def test_client_task_runs_fedsilo_client_for_its_site_on_one_gpu(
    federation: Federation, hospital_template: Template
) -> None:
    site = federation.context.hospitals[0]
    hospital_template.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "NetworkMode": "awsvpc",
            "ContainerDefinitions": [
                Match.object_like(
                    {
                        "Command": [
                            "client",
                            "run",
                            "--site-id",
                            site.site_id,
                            "--log-format",
                            "json",
                        ],
                        "ResourceRequirements": [{"Type": "GPU", "Value": "1"}],
                        "Environment": Match.array_with(
                            [{"Name": "FEDSILO_SITE_ID", "Value": site.site_id}]
                        ),
                    }
                )
            ],
        },
    )
    hospital_template.has_resource_properties(
        "AWS::ECS::Service", {"CapacityProviderStrategy": [Match.object_like({"Weight": 1})]}
    )


def test_no_security_group_admits_traffic_except_https_into_endpoints_and_nfs_into_state(
    federation: Federation,
) -> None:
    """The only ingress rules: 443 into interface endpoints and 2049 into the state volume's
    mount targets, each from a workload's group."""
    for stack in [federation.aggregator, *federation.hospitals]:
        template = federation.template_json(stack)
        endpoint_groups = {
            group["Fn::GetAtt"][0]
            for endpoint in resources_of(template, "AWS::EC2::VPCEndpoint").values()
            for group in endpoint["Properties"].get("SecurityGroupIds", [])
        }
        state_groups = {
            group["Fn::GetAtt"][0]
            for target in resources_of(template, "AWS::EFS::MountTarget").values()
            for group in target["Properties"]["SecurityGroups"]
        }
        for logical_id, group in resources_of(template, "AWS::EC2::SecurityGroup").items():
            assert not group["Properties"].get("SecurityGroupIngress"), logical_id
        for rule in resources_of(template, "AWS::EC2::SecurityGroupIngress").values():
            props = rule["Properties"]
            assert "CidrIp" not in props and "CidrIpv6" not in props, props
            target = props["GroupId"]["Fn::GetAtt"][0]
            port = 2049 if target in state_groups else 443
            assert props["FromPort"] == props["ToPort"] == port, props
            assert target in endpoint_groups | state_groups, props
            assert "SourceSecurityGroupId" in props, props

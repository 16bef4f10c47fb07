"""AggregatorStack: exchange, key, network, aggregator task and audit trail, per docs/design.md."""

from __future__ import annotations

from aws_cdk.assertions import Match, Template
from stackhelpers import Federation, resources_of

from stacks.context import SITE_TAG_KEY, exchange_key_alias, hospital_role_arn
from stacks.policies import ExchangeArns


def test_exchange_bucket_is_encrypted_versioned_logged_private_and_kept(
    federation: Federation, aggregator_template: Template
) -> None:
    ctx = federation.context
    aggregator_template.has_resource(
        "AWS::S3::Bucket",
        {
            "Properties": {
                "BucketName": ctx.bucket_name,
                "VersioningConfiguration": {"Status": "Enabled"},
                "BucketEncryption": {
                    "ServerSideEncryptionConfiguration": [
                        {
                            "ServerSideEncryptionByDefault": {
                                "SSEAlgorithm": "aws:kms",
                                "KMSMasterKeyID": Match.any_value(),
                            },
                            "BucketKeyEnabled": False,
                        }
                    ]
                },
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": True,
                    "BlockPublicPolicy": True,
                    "IgnorePublicAcls": True,
                    "RestrictPublicBuckets": True,
                },
                "LoggingConfiguration": {
                    "DestinationBucketName": Match.any_value(),
                    "LogFilePrefix": Match.any_value(),
                },
                "LifecycleConfiguration": {
                    "Rules": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "NoncurrentVersionExpiration": {
                                        "NoncurrentDays": ctx.noncurrent_version_retention_days
                                    },
                                    "Status": "Enabled",
                                }
                            )
                        ]
                    )
                },
            },
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
        },
    )


def test_every_bucket_and_key_survives_stack_deletion(federation: Federation) -> None:
    for stack in [federation.aggregator, *federation.hospitals]:
        template = federation.template_json(stack)
        for kind in ("AWS::S3::Bucket", "AWS::KMS::Key", "AWS::Logs::LogGroup"):
            for logical_id, resource in resources_of(template, kind).items():
                assert resource.get("DeletionPolicy") == "Retain", (stack.stack_name, logical_id)


def test_exchange_bucket_policy_is_tls_only_and_grants_hospitals_by_role_arn(
    federation: Federation, aggregator_template: Template
) -> None:
    ctx = federation.context
    arns = ExchangeArns(ctx)
    site_var = f"${{aws:PrincipalTag/{SITE_TAG_KEY}}}"
    aggregator_template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": Match.any_value()},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Action": "s3:*",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        ),
                        {
                            "Sid": "ListedHospitalsGetAndPutFederationKeys",
                            "Effect": "Allow",
                            "Principal": {"AWS": "*"},
                            "Action": ["s3:GetObject", "s3:PutObject"],
                            "Resource": arns.root,
                            "Condition": {
                                "ArnEquals": {
                                    "aws:PrincipalArn": [
                                        hospital_role_arn(ctx.federation_id, s)
                                        for s in ctx.hospitals
                                    ]
                                },
                                "ArnLike": {
                                    "aws:PrincipalArn": (
                                        f"arn:aws:iam::*:role/fedsilo/{ctx.federation_id}-{site_var}"
                                    )
                                },
                            },
                        },
                        Match.object_like(
                            {
                                "Sid": "OutsidersOnlyGetAndPut",
                                "Effect": "Deny",
                                "NotAction": ["s3:GetObject", "s3:PutObject"],
                            }
                        ),
                        Match.object_like(
                            {
                                "Sid": "OutsidersReadOnlyPublicKeysAndOwnRegistry",
                                "Effect": "Deny",
                                "Action": "s3:GetObject",
                                "NotResource": arns.reads_of(site_var),
                            }
                        ),
                        Match.object_like(
                            {
                                "Sid": "OutsidersWriteOnlyOwnUpdateKeys",
                                "Effect": "Deny",
                                "Action": "s3:PutObject",
                                "NotResource": arns.writes_of(site_var),
                            }
                        ),
                        Match.object_like(
                            {
                                "Sid": "OutsidersWriteOnce",
                                "Effect": "Deny",
                                "Condition": Match.object_like(
                                    {"Null": {"s3:if-none-match": "true"}}
                                ),
                            }
                        ),
                    ]
                )
            },
        },
    )


def test_exchange_key_rotates_and_lets_hospitals_use_it_only_through_s3(
    federation: Federation, aggregator_template: Template
) -> None:
    ctx = federation.context
    aggregator_template.has_resource_properties(
        "AWS::KMS::Key",
        {
            "EnableKeyRotation": True,
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Sid": "HospitalsUseKeyOnlyViaS3ForTheirObjects",
                                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                                "Condition": Match.object_like(
                                    {
                                        "StringEquals": {
                                            "kms:ViaService": f"s3.{ctx.region}.amazonaws.com"
                                        },
                                        "ArnEquals": {
                                            "aws:PrincipalArn": [
                                                hospital_role_arn(ctx.federation_id, s)
                                                for s in ctx.hospitals
                                            ]
                                        },
                                    }
                                ),
                            }
                        )
                    ]
                )
            },
        },
    )
    aggregator_template.has_resource_properties(
        "AWS::KMS::Alias", {"AliasName": exchange_key_alias(ctx.federation_id)}
    )
    for key in resources_of(
        federation.template_json(federation.aggregator), "AWS::KMS::Key"
    ).values():
        assert key["Properties"]["EnableKeyRotation"] is True


def test_network_has_no_internet_route_and_the_endpoints_tasks_need(
    aggregator_template: Template, hospital_template: Template
) -> None:
    for template in (aggregator_template, hospital_template):
        for kind in ("AWS::EC2::InternetGateway", "AWS::EC2::NatGateway", "AWS::EC2::EIP"):
            template.resource_count_is(kind, 0)
        template.has_resource_properties("AWS::EC2::Subnet", {"MapPublicIpOnLaunch": False})
        template.has_resource_properties(
            "AWS::EC2::VPCEndpoint",
            {
                "VpcEndpointType": "Gateway",
                "ServiceName": {"Fn::Join": ["", Match.array_with([".s3"])]},
            },
        )
        for service in ("ecr.api", "ecr.dkr", "logs", "sts"):
            template.has_resource_properties(
                "AWS::EC2::VPCEndpoint",
                {
                    "VpcEndpointType": "Interface",
                    "PrivateDnsEnabled": True,
                    "ServiceName": Match.string_like_regexp(rf"com\.amazonaws\..*\.{service}$"),
                },
            )
        template.has_resource_properties("AWS::EC2::FlowLog", {"TrafficType": "ALL"})


def test_aggregator_task_runs_fedsilo_server_with_encrypted_retained_logs(
    federation: Federation, aggregator_template: Template
) -> None:
    ctx = federation.context
    aggregator_template.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "RequiresCompatibilities": ["FARGATE"],
            "ContainerDefinitions": [
                Match.object_like(
                    {
                        "Command": ["server", "run", "--log-format", "json"],
                        "Environment": Match.array_with(
                            [
                                {"Name": "FEDSILO_FEDERATION_ID", "Value": ctx.federation_id},
                                {"Name": "FEDSILO_EXCHANGE", "Value": f"s3://{ctx.bucket_name}"},
                            ]
                        ),
                        "LogConfiguration": Match.object_like({"LogDriver": "awslogs"}),
                    }
                )
            ],
        },
    )
    aggregator_template.has_resource_properties(
        "AWS::ECS::Service",
        {
            "LaunchType": "FARGATE",
            "DesiredCount": 1,
            "NetworkConfiguration": {
                "AwsvpcConfiguration": Match.object_like({"AssignPublicIp": "DISABLED"})
            },
        },
    )
    aggregator_template.has_resource_properties(
        "AWS::ECS::Cluster",
        {"ClusterSettings": [{"Name": "containerInsights", "Value": "enhanced"}]},
    )
    for log_group in resources_of(
        federation.template_json(federation.aggregator), "AWS::Logs::LogGroup"
    ).values():
        assert "KmsKeyId" in log_group["Properties"]
        assert log_group["Properties"]["RetentionInDays"] == ctx.log_retention_days


def test_aggregator_role_reads_and_writes_its_federation_and_deletes_nothing(
    federation: Federation, aggregator_template: Template
) -> None:
    arns = ExchangeArns(federation.context)
    aggregator_template.has_resource_properties(
        "AWS::IAM::ManagedPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Sid": "ReadWriteFederationObjects",
                                "Action": ["s3:GetObject", "s3:PutObject"],
                                "Resource": arns.root,
                            }
                        ),
                        Match.object_like(
                            {
                                "Sid": "ListFederationPrefix",
                                "Action": "s3:ListBucket",
                                "Condition": {"StringLike": {"s3:prefix": f"{arns.layout.root}*"}},
                            }
                        ),
                    ]
                )
            }
        },
    )
    template = federation.template_json(federation.aggregator)
    policies = [
        *resources_of(template, "AWS::IAM::ManagedPolicy").values(),
        *resources_of(template, "AWS::IAM::Policy").values(),
    ]
    for policy in policies:
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = (
                statement["Action"]
                if isinstance(statement["Action"], list)
                else [statement["Action"]]
            )
            assert not [a for a in actions if a.startswith("s3:Delete") or a == "s3:*"], statement


def test_cloudtrail_records_exchange_data_events_with_validation(
    federation: Federation, aggregator_template: Template
) -> None:
    aggregator_template.has_resource_properties(
        "AWS::CloudTrail::Trail",
        {
            "EnableLogFileValidation": True,
            "IsLogging": True,
            "KMSKeyId": Match.any_value(),
            "CloudWatchLogsLogGroupArn": Match.any_value(),
            "EventSelectors": Match.array_with(
                [
                    Match.object_like(
                        {
                            "ReadWriteType": "All",
                            "DataResources": [
                                {
                                    "Type": "AWS::S3::Object",
                                    "Values": [
                                        {
                                            "Fn::Join": [
                                                "",
                                                [{"Fn::GetAtt": [Match.any_value(), "Arn"]}, "/"],
                                            ]
                                        }
                                    ],
                                }
                            ],
                        }
                    )
                ]
            ),
        },
    )


def test_gpu_aggregator_runs_on_gpu_capacity(gpu_federation: Federation) -> None:
    template = gpu_federation.template(gpu_federation.aggregator)
    template.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "RequiresCompatibilities": ["EC2"],
            "NetworkMode": "awsvpc",
            "ContainerDefinitions": [
                Match.object_like({"ResourceRequirements": [{"Type": "GPU", "Value": "1"}]})
            ],
        },
    )
    template.has_resource_properties("AWS::AutoScaling::AutoScalingGroup", {"MinSize": "0"})

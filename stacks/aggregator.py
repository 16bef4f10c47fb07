"""The coordinating centre's stack: the exchange, its key, the aggregator task, the audit trail."""

from __future__ import annotations

import json

from aws_cdk import CfnOutput
from aws_cdk import aws_iam as iam
from constructs import Construct

from fl_core.errors import ConfigError
from stacks.audit import AuditTrail
from stacks.base import FederationStack
from stacks.compute import (
    FederationCluster,
    FederationService,
    GpuCapacity,
    log_retention,
    task_role,
)
from stacks.context import FederationContext, exchange_key_alias
from stacks.encryption import FederationKey
from stacks.images import SERVER_DOCKERFILE, container_image
from stacks.nag import acknowledge
from stacks.network import PrivateNetwork
from stacks.policies import ExchangeArns, hospital_key_statement
from stacks.storage import AccessLogBucket, ExchangeBucket

KEY_POLICY_LIMIT_BYTES = 32 * 1024
AGGREGATOR_CIDR = "10.20.0.0/16"


class AggregatorStack(FederationStack):
    """Deployed once, in the coordinating account and region of ``context``."""

    def __init__(self, scope: Construct, construct_id: str, *, context: FederationContext) -> None:
        super().__init__(
            scope,
            construct_id,
            account=context.coordinating_account,
            region=context.region,
            zones=context.availability_zones,
            description=f"fedsilo coordinating centre for federation {context.federation_id}",
        )
        fid = context.federation_id
        retention = log_retention(context.log_retention_days)
        self.exchange_key = FederationKey(
            self,
            "ExchangeKey",
            alias=exchange_key_alias(fid),
            description=f"fedsilo exchange of federation {fid}: models and updates",
        )
        key_statement = hospital_key_statement(context)
        self.exchange_key.key.add_to_resource_policy(key_statement)
        self._check_key_policy_size(key_statement)
        self.operations_key = FederationKey(
            self,
            "OperationsKey",
            alias=f"alias/fedsilo/{fid}/operations",
            description=f"fedsilo federation {fid}: logs, audit trail, volumes",
        )
        self.operations_key.allow_cloudwatch_logs()
        self.access_logs = AccessLogBucket(
            self, "AccessLogs", retention_days=max(context.log_retention_days, 365)
        ).bucket
        self.exchange = ExchangeBucket(
            self,
            "Exchange",
            context=context,
            key=self.exchange_key.key,
            access_logs=self.access_logs,
        ).bucket
        self.audit = AuditTrail(
            self,
            "Audit",
            trail_name=f"fedsilo-{fid}",
            key=self.operations_key,
            access_logs=self.access_logs,
            log_retention=retention,
            noncurrent_retention_days=context.noncurrent_version_retention_days,
        )
        self.audit.record_data_events(self.exchange)

        self.network = PrivateNetwork(
            self,
            "Network",
            cidr=AGGREGATOR_CIDR,
            zones=context.availability_zones,
            logs_key=self.operations_key.key,
            log_retention=retention,
            with_ecs_instances=context.aggregator.gpu,
        )
        self.network.limit_s3_to([self.exchange.bucket_arn])
        self.cluster = FederationCluster(self, "Compute", network=self.network)
        gpu = None
        if context.aggregator.gpu:
            gpu = GpuCapacity(
                self,
                "GpuCapacity",
                cluster=self.cluster,
                instance_type=context.aggregator.gpu_instance_type,
                max_instances=1,
                root_volume_gib=100,
                ebs_key=self.operations_key.key,
            )
        self.role = task_role(
            self, "AggregatorRole", description=f"fedsilo aggregator of federation {fid}"
        )
        self._grant_exchange(context)
        self.service = FederationService(
            self,
            "Aggregator",
            cluster=self.cluster,
            image=container_image(
                self, "ServerImage", pinned=context.images.server, dockerfile=SERVER_DOCKERFILE
            ),
            command=["server", "run", "--log-format", "json"],
            environment={
                "FEDSILO_FEDERATION_ID": fid,
                "FEDSILO_EXCHANGE": f"s3://{context.bucket_name}",
                "FEDSILO_LOG_FORMAT": "json",
                "AWS_REGION": context.region,
            },
            role=self.role,
            logs_key=self.operations_key.key,
            log_retention=retention,
            desired_count=1,
            cpu_units=context.aggregator.cpu_units,
            memory_mib=context.aggregator.memory_mib,
            gpu_capacity=gpu,
        )
        CfnOutput(self, "ExchangeBucketName", value=self.exchange.bucket_name)
        CfnOutput(self, "ExchangeKeyArn", value=self.exchange_key.key.key_arn)

    def _grant_exchange(self, context: FederationContext) -> None:
        """The aggregator reads, lists and writes its federation's prefix; it deletes nothing."""
        arns = ExchangeArns(context)
        policy = iam.ManagedPolicy(
            self,
            "AggregatorExchangeAccess",
            description=f"fedsilo aggregator: federation {context.federation_id} in the exchange",
            roles=[self.role],
            statements=[
                iam.PolicyStatement(
                    sid="ReadWriteFederationObjects",
                    actions=["s3:GetObject", "s3:PutObject"],
                    resources=[arns.root],
                ),
                iam.PolicyStatement(
                    sid="ListFederationPrefix",
                    actions=["s3:ListBucket"],
                    resources=[arns.bucket],
                    conditions={"StringLike": {"s3:prefix": f"{arns.layout.root}*"}},
                ),
                iam.PolicyStatement(
                    sid="UseExchangeKey",
                    actions=["kms:Decrypt", "kms:GenerateDataKey"],
                    resources=[self.exchange_key.key.key_arn],
                ),
            ],
        )
        acknowledge(
            policy,
            f"AwsSolutions-IAM5[Resource::{arns.root}]",
            "The aggregator owns the whole federation prefix (rounds, registry, ledger, state); "
            "the wildcard is the key below federations/{id}/ and deletes are not granted.",
        )

    def _check_key_policy_size(self, statement: iam.PolicyStatement) -> None:
        # The account-admin statement CDK adds is under 300 bytes; keep 2 KB of headroom.
        size = len(json.dumps(self.resolve(statement.to_statement_json()), separators=(",", ":")))
        if size + 2048 > KEY_POLICY_LIMIT_BYTES:
            raise ConfigError(
                f"hospitals: the exchange key policy would be {size + 2048} bytes, over KMS's "
                f"{KEY_POLICY_LIMIT_BYTES}; shorten site ids or split the federation"
            )

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
    task_environment,
    task_role,
)
from stacks.context import FederationContext, exchange_key_alias
from stacks.encryption import FederationKey
from stacks.grants import grant_managed_policy
from stacks.images import SERVER_DOCKERFILE, container_image
from stacks.policies import ExchangeArns, aggregator_exchange_statements, hospital_key_statements
from stacks.storage import ExchangeBucket

KEY_POLICY_LIMIT_BYTES = 32 * 1024
AGGREGATOR_CIDR = "10.20.0.0/16"


class AggregatorStack(FederationStack):
    """Deployed once, in the coordinating account and region of ``context``."""

    def __init__(self, scope: Construct, construct_id: str, *, context: FederationContext) -> None:
        super().__init__(
            scope,
            construct_id,
            context=context,
            account=context.coordinating_account,
            description=f"fedsilo coordinating centre for federation {context.federation_id}",
        )
        self.exchange_key = self._exchange_key()
        self.operations_key = self._operations_key()
        self.access_logs = self.add_access_logs()
        self.exchange = ExchangeBucket(
            self,
            "Exchange",
            context=context,
            key=self.exchange_key.key,
            access_logs=self.access_logs,
        ).bucket
        self.audit = self._audit_trail()
        self.network = self.add_network(
            AGGREGATOR_CIDR,
            logs_key=self.operations_key.key,
            with_ecs_instances=context.aggregator.gpu,
            bucket_arns=[self.exchange.bucket_arn],
        )
        self.cluster = FederationCluster(self, "Compute", network=self.network)
        gpu = self._gpu_capacity() if context.aggregator.gpu else None
        self.role = task_role(
            self,
            "AggregatorRole",
            description=f"fedsilo aggregator of federation {context.federation_id}",
        )
        self._grant_exchange()
        self.service = self._aggregator_service(gpu)
        CfnOutput(self, "ExchangeBucketName", value=self.exchange.bucket_name)
        CfnOutput(self, "ExchangeKeyArn", value=self.exchange_key.key.key_arn)

    def _exchange_key(self) -> FederationKey:
        """The exchange's key; its policy lets the listed hospitals use it through S3."""
        fid = self.context.federation_id
        key = FederationKey(
            self,
            "ExchangeKey",
            alias=exchange_key_alias(fid),
            description=f"fedsilo exchange of federation {fid}: models and updates",
        )
        statements = hospital_key_statements(self.context)
        for statement in statements:
            key.key.add_to_resource_policy(statement)
        self._check_key_policy_size(statements)
        return key

    def _operations_key(self) -> FederationKey:
        """The key of everything else the centre keeps: logs, the audit trail, volumes."""
        fid = self.context.federation_id
        return self.add_logs_key(
            "OperationsKey",
            alias=f"alias/fedsilo/{fid}/operations",
            description=f"fedsilo federation {fid}: logs, audit trail, volumes",
        )

    def _audit_trail(self) -> AuditTrail:
        """CloudTrail of the account, with every object read and write of the exchange."""
        audit = AuditTrail(
            self,
            "Audit",
            trail_name=f"fedsilo-{self.context.federation_id}",
            key=self.operations_key,
            access_logs=self.access_logs,
            log_retention=self.log_retention,
            noncurrent_retention_days=self.context.noncurrent_version_retention_days,
        )
        audit.record_data_events(self.exchange)
        return audit

    def _gpu_capacity(self) -> GpuCapacity:
        """One GPU instance at most, for an aggregator that the context puts on a GPU."""
        return GpuCapacity(
            self,
            "GpuCapacity",
            cluster=self.cluster,
            instance_type=self.context.aggregator.gpu_instance_type,
            max_instances=1,
            root_volume_gib=100,
            ebs_key=self.operations_key.key,
        )

    def _grant_exchange(self) -> None:
        """The aggregator reads, lists and writes its federation's prefix; it deletes nothing."""
        arns = ExchangeArns(self.context)
        grant_managed_policy(
            self,
            "AggregatorExchangeAccess",
            role=self.role,
            description=(
                f"fedsilo aggregator: federation {self.context.federation_id} in the exchange"
            ),
            statements=aggregator_exchange_statements(self.context, self.exchange_key.key.key_arn),
            wildcard_reasons={
                arns.root: "The aggregator owns the whole federation prefix (rounds, registry, "
                "ledger, state); the wildcard is the key below federations/{id}/ and deletes "
                "are not granted.",
                arns.ledger: "Past versions of the ledger entries, to prove that none was "
                "replaced; the wildcard is the round's entry below the federation's ledger/.",
            },
        )

    def _aggregator_service(self, gpu: GpuCapacity | None) -> FederationService:
        """``fedsilo server run`` as the one aggregator task, on Fargate or on ``gpu``."""
        context = self.context
        return self.add_service(
            "Aggregator",
            container_image(
                self, "ServerImage", pinned=context.images.server, dockerfile=SERVER_DOCKERFILE
            ),
            arguments=["server", "run"],
            environment=task_environment(context),
            logs_key=self.operations_key.key,
            gpu_capacity=gpu,
            desired_count=1,
            cpu_units=context.aggregator.cpu_units,
            memory_mib=context.aggregator.memory_mib,
        )

    def _check_key_policy_size(self, statements: list[iam.PolicyStatement]) -> None:
        # The account-admin statement CDK adds is under 300 bytes; keep 2 KB of headroom.
        rendered = [self.resolve(statement.to_statement_json()) for statement in statements]
        size = len(json.dumps(rendered, separators=(",", ":")))
        if size + 2048 > KEY_POLICY_LIMIT_BYTES:
            raise ConfigError(
                f"hospitals: the exchange key policy would be {size + 2048} bytes, over KMS's "
                f"{KEY_POLICY_LIMIT_BYTES}; shorten site ids or split the federation"
            )

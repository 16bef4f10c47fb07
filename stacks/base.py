"""What both stacks share: their binding to the context, and the pieces every member runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Environment, Stack
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.compute import FederationCluster, FederationService, GpuCapacity, log_retention
from stacks.context import FederationContext
from stacks.encryption import FederationKey
from stacks.endpoint_policies import image_repository_arns
from stacks.nag import skip_checkov
from stacks.network import PrivateNetwork
from stacks.storage import AccessLogBucket

MIN_ACCESS_LOG_RETENTION_DAYS = 365
"""S3 access logs are kept at least a year, longer when the context keeps logs longer."""


class FederationStack(Stack):
    """Base of the stacks of one federation: ``AggregatorStack`` and ``HospitalStack``.

    Subclass it for another kind of member. It binds the stack to ``account`` and the
    federation's region, keeps the validated ``context`` and the CloudWatch ``log_retention``,
    and its ``add_*`` methods build what every member runs. Each of them gives its construct a
    fixed id that deployed stacks already carry: call each at most once per stack, and never
    change an id (CloudFormation would replace the resource). A subclass sets ``cluster`` and
    ``role`` (the task role) before it calls ``add_service``.

    CDK asks the account for its zone names (a ``cdk synth`` with credentials) whenever a VPC
    is built in a stack with an explicit environment. The zones here are either the context's
    ``availability_zones`` or placeholders that ``PrivateNetwork`` replaces with ``Fn::GetAZs``
    in the template, so synthesis stays offline.
    """

    cluster: FederationCluster
    role: iam.Role

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        context: FederationContext,
        account: str,
        description: str,
    ) -> None:
        region = context.region
        super().__init__(
            scope,
            construct_id,
            env=Environment(account=account, region=region),
            description=description,
        )
        self.context = context
        self.log_retention = log_retention(context.log_retention_days)
        self._zones = list(context.availability_zones or (f"{region}a", f"{region}b"))

    @property
    def availability_zones(self) -> list[str]:
        return list(self._zones)

    def add_logs_key(self, construct_id: str, *, alias: str, description: str) -> FederationKey:
        """A key that CloudWatch Logs may use for this account's log groups."""
        key = FederationKey(self, construct_id, alias=alias, description=description)
        key.allow_cloudwatch_logs()
        return key

    def add_access_logs(self) -> s3.IBucket:
        """The ``AccessLogs`` bucket that receives the S3 server access logs of the stack."""
        days = max(self.context.log_retention_days, MIN_ACCESS_LOG_RETENTION_DAYS)
        bucket = AccessLogBucket(self, "AccessLogs", retention_days=days).bucket
        skip_checkov(
            bucket,
            "CKV_AWS_18",
            "This is the access-log bucket itself: logging its own deliveries into itself would "
            "loop; its writes are S3's log delivery alone, and reads are in the account's "
            "CloudTrail.",
        )
        return bucket

    def add_network(
        self,
        cidr: str,
        *,
        logs_key: kms.IKey,
        with_ecs_instances: bool,
        bucket_arns: Sequence[str],
        with_parameters: bool = False,
    ) -> PrivateNetwork:
        """The ``Network``: flow logs under ``logs_key``, endpoints for this account's principals.

        S3 reaches ``bucket_arns`` only; ECR, the repositories of the context's images.
        """
        network = PrivateNetwork(
            self,
            "Network",
            cidr=cidr,
            zones=self.context.availability_zones,
            logs_key=logs_key,
            log_retention=self.log_retention,
            with_ecs_instances=with_ecs_instances,
            with_parameters=with_parameters,
        )
        network.limit_s3_to(bucket_arns)
        network.limit_endpoints_to_own_account(image_repository_arns(self, self.context))
        return network

    def add_service(
        self,
        construct_id: str,
        image: ecs.ContainerImage,
        *,
        arguments: Sequence[str],
        environment: Mapping[str, str],
        logs_key: kms.IKey,
        gpu_capacity: GpuCapacity | None,
        desired_count: int,
        cpu_units: int,
        memory_mib: int,
    ) -> FederationService:
        """The stack's task ``fedsilo ARGUMENTS --log-format json``, in ``cluster`` as ``role``."""
        return FederationService(
            self,
            construct_id,
            cluster=self.cluster,
            image=image,
            command=[*arguments, "--log-format", "json"],
            environment=environment,
            role=self.role,
            logs_key=logs_key,
            log_retention=self.log_retention,
            desired_count=desired_count,
            cpu_units=cpu_units,
            memory_mib=memory_mib,
            gpu_capacity=gpu_capacity,
        )

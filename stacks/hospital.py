"""A hospital's stack: its own data, its own network, one GPU training task."""

from __future__ import annotations

from aws_cdk import CfnOutput, Tags
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.base import FederationStack
from stacks.compute import (
    FederationCluster,
    FederationService,
    GpuCapacity,
    log_retention,
    task_role,
)
from stacks.context import (
    HOSPITAL_ROLE_PATH,
    SITE_TAG_KEY,
    FederationContext,
    HospitalSite,
    hospital_role_name,
)
from stacks.encryption import FederationKey
from stacks.images import CLIENT_DOCKERFILE, container_image
from stacks.nag import acknowledge
from stacks.network import PrivateNetwork
from stacks.policies import ExchangeArns, hospital_identity_statements, partition
from stacks.storage import AccessLogBucket, EncryptedBucket

HOSPITAL_CIDR = "10.30.0.0/16"


class HospitalStack(FederationStack):
    """Deployed by each hospital into its own account, in the federation's region.

    The region is the exchange's: tasks reach S3 only through the VPC's gateway endpoint, which
    serves buckets of its own region. Nothing outside the account is granted on the data bucket
    or the data key; the only thing the task role may send out is its own model update.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, context: FederationContext, site: HospitalSite
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            account=site.account_id,
            region=context.region,
            zones=context.availability_zones,
            description=(f"fedsilo hospital {site.site_id} in federation {context.federation_id}"),
        )
        fid = context.federation_id
        retention = log_retention(context.log_retention_days)
        self.data_key = FederationKey(
            self,
            "DataKey",
            alias=f"alias/fedsilo/{fid}/{site.site_id}/data",
            description=f"fedsilo hospital {site.site_id}: training data, logs, volumes",
        )
        self.data_key.allow_cloudwatch_logs()
        access_logs = AccessLogBucket(
            self, "AccessLogs", retention_days=max(context.log_retention_days, 365)
        ).bucket
        self.data = EncryptedBucket(
            self,
            "Data",
            key=self.data_key.key,
            access_logs=access_logs,
            noncurrent_retention_days=context.noncurrent_version_retention_days,
        ).bucket
        self.network = PrivateNetwork(
            self,
            "Network",
            cidr=HOSPITAL_CIDR,
            zones=context.availability_zones,
            logs_key=self.data_key.key,
            log_retention=retention,
            with_ecs_instances=True,
        )
        exchange = ExchangeArns(context)
        self.network.limit_s3_to([self.data.bucket_arn, exchange.bucket])
        self.cluster = FederationCluster(self, "Compute", network=self.network)
        self.gpu = GpuCapacity(
            self,
            "GpuCapacity",
            cluster=self.cluster,
            instance_type=context.hospital.instance_type,
            max_instances=context.hospital.max_instances,
            root_volume_gib=context.hospital.root_volume_gib,
            ebs_key=self.data_key.key,
        )
        self.role = task_role(
            self,
            "ClientRole",
            role_name=hospital_role_name(fid, site.site_id),
            path=HOSPITAL_ROLE_PATH,
            description=f"fedsilo client {site.site_id}: own data, own updates in federation {fid}",
        )
        Tags.of(self.role).add(SITE_TAG_KEY, site.site_id)
        self._grant(context, site)
        self.service = FederationService(
            self,
            "Client",
            cluster=self.cluster,
            image=container_image(
                self, "ClientImage", pinned=context.images.client, dockerfile=CLIENT_DOCKERFILE
            ),
            command=["client", "run", "--site-id", site.site_id, "--log-format", "json"],
            environment={
                "FEDSILO_FEDERATION_ID": fid,
                "FEDSILO_SITE_ID": site.site_id,
                "FEDSILO_EXCHANGE": f"s3://{context.bucket_name}",
                "FEDSILO_DATA": f"s3://{self.data.bucket_name}",
                "FEDSILO_LOG_FORMAT": "json",
                "AWS_REGION": context.region,
            },
            role=self.role,
            logs_key=self.data_key.key,
            log_retention=retention,
            desired_count=context.hospital.desired_tasks,
            cpu_units=0,
            memory_mib=context.hospital.memory_mib,
            gpu_capacity=self.gpu,
        )
        CfnOutput(self, "ClientRoleArn", value=self.role.role_arn)
        CfnOutput(self, "DataBucketName", value=self.data.bucket_name)

    def _grant(self, context: FederationContext, site: HospitalSite) -> None:
        exchange = ExchangeArns(context)
        policy = iam.ManagedPolicy(
            self,
            "ExchangeAccess",
            description=f"fedsilo client {site.site_id}: its exchange rights, own data read",
            roles=[self.role],
            statements=[
                *hospital_identity_statements(context, site),
                iam.PolicyStatement(
                    sid="ReadOwnTrainingData",
                    actions=["s3:GetObject"],
                    resources=[self.data.arn_for_objects("*")],
                ),
                iam.PolicyStatement(
                    sid="ListOwnTrainingData",
                    actions=["s3:ListBucket"],
                    resources=[self.data.bucket_arn],
                ),
                iam.PolicyStatement(
                    sid="DecryptOwnTrainingData",
                    actions=["kms:Decrypt"],
                    resources=[self.data_key.key.key_arn],
                ),
            ],
        )
        exchange_key_pattern = (
            f"arn:{partition(context.region)}:kms:{context.region}:"
            f"{context.coordinating_account}:key/*"
        )
        reasons = {
            exchange.global_models: "the wildcards are the round index and the file extension "
            "of the published global model (weights and manifest) of any round",
            exchange.updates_of(site.site_id): "the wildcards are the round index and the "
            "extension of this hospital's own update; other sites' names never match",
            exchange_key_pattern: (
                "the exchange key's id is created in the coordinating account; the statement "
                "is pinned to it by its alias (kms:ResourceAliases) and to use through S3"
            ),
        }
        data_bucket_id = self.resolve(self.get_logical_id(self.data.node.default_child))  # type: ignore[arg-type]
        reasons[f"<{data_bucket_id}.Arn>/*"] = (
            "any object of this hospital's own data bucket, in its own account; the prepared "
            "training files are the bucket's only content"
        )
        for resource, reason in reasons.items():
            acknowledge(policy, f"AwsSolutions-IAM5[Resource::{resource}]", reason)

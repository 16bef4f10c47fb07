"""A hospital's stack: its own data, its own network, one GPU training task."""

from __future__ import annotations

from aws_cdk import CfnOutput, Tags
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from fl_core.site_policy import POLICY_JSON_ENV
from stacks.base import FederationStack
from stacks.compute import (
    FederationCluster,
    FederationService,
    GpuCapacity,
    task_environment,
    task_role,
)
from stacks.context import (
    HOSPITAL_ROLE_PATH,
    SITE_TAG_KEY,
    FederationContext,
    HospitalSite,
    hospital_role_name,
)
from stacks.grants import allow, grant_managed_policy
from stacks.images import CLIENT_DOCKERFILE, container_image
from stacks.policies import ExchangeArns, exchange_key_arns, hospital_identity_statements
from stacks.state_volume import HospitalStateVolume
from stacks.storage import EncryptedBucket

HOSPITAL_CIDR = "10.30.0.0/16"
STANDARD_PARAMETER_BYTES = 4096
"""A standard SSM parameter's limit; a longer policy is an advanced parameter."""


class HospitalStack(FederationStack):
    """Deployed by each hospital into its own account, in the federation's region.

    The region is the exchange's: tasks reach S3 only through the VPC's gateway endpoint, which
    serves buckets of its own region. Nothing outside the account is granted on the data bucket
    or the data key; the only thing the task role may send out is its own model update. The
    client's state folder (privacy accountant, secure-aggregation key) is an encrypted EFS
    volume, so that a restarted task resumes its privacy budget instead of starting afresh.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, context: FederationContext, site: HospitalSite
    ) -> None:
        description = f"fedsilo hospital {site.site_id} in federation {context.federation_id}"
        super().__init__(
            scope, construct_id, context=context, account=site.account_id, description=description
        )
        self.site = site
        self.data_key = self.add_logs_key(
            "DataKey",
            alias=f"alias/fedsilo/{context.federation_id}/{site.site_id}/data",
            description=f"fedsilo hospital {site.site_id}: training data, logs, volumes",
        )
        access_logs = self.add_access_logs()
        self.data = EncryptedBucket(
            self,
            "Data",
            key=self.data_key.key,
            access_logs=access_logs,
            noncurrent_retention_days=context.noncurrent_version_retention_days,
        ).bucket
        self.network = self.add_network(
            HOSPITAL_CIDR,
            logs_key=self.data_key.key,
            with_ecs_instances=True,
            bucket_arns=[self.data.bucket_arn, ExchangeArns(context).bucket],
            with_parameters=site.site_policy is not None,
        )
        self.cluster = FederationCluster(self, "Compute", network=self.network)
        self.gpu = self._gpu_capacity()
        self.role = self._client_role()
        self._grant_exchange_and_own_data()
        self.service = self._client_service()
        self.site_policy = self._site_policy()
        self.state = HospitalStateVolume(self, "State", network=self.network, key=self.data_key.key)
        self.state.mount_into(
            self.service,
            role=self.role,
            network_clients=[self.service.security_group, self.gpu.security_group],
        )
        CfnOutput(self, "ClientRoleArn", value=self.role.role_arn)
        CfnOutput(self, "StateFileSystemId", value=self.state.file_system.file_system_id)
        CfnOutput(self, "DataBucketName", value=self.data.bucket_name)

    def _gpu_capacity(self) -> GpuCapacity:
        """The GPU instances of the context's ``hospital`` settings, idle at zero."""
        settings = self.context.hospital
        return GpuCapacity(
            self,
            "GpuCapacity",
            cluster=self.cluster,
            instance_type=settings.instance_type,
            max_instances=settings.max_instances,
            root_volume_gib=settings.root_volume_gib,
            ebs_key=self.data_key.key,
        )

    def _client_role(self) -> iam.Role:
        """The task role, named and tagged as the exchange's policies expect it."""
        fid, site_id = self.context.federation_id, self.site.site_id
        role = task_role(
            self,
            "ClientRole",
            role_name=hospital_role_name(fid, site_id),
            path=HOSPITAL_ROLE_PATH,
            description=f"fedsilo client {site_id}: own data, own updates in federation {fid}",
        )
        Tags.of(role).add(SITE_TAG_KEY, site_id)
        return role

    def _grant_exchange_and_own_data(self) -> None:
        """The exchange rights of docs/design.md's rule, and reading this hospital's own data."""
        grant_managed_policy(
            self,
            "ExchangeAccess",
            role=self.role,
            description=f"fedsilo client {self.site.site_id}: its exchange rights, own data read",
            statements=[
                *hospital_identity_statements(self.context, self.site),
                allow("ReadOwnTrainingData", ["s3:GetObject"], [self.data.arn_for_objects("*")]),
                allow("ListOwnTrainingData", ["s3:ListBucket"], [self.data.bucket_arn]),
                allow("DecryptOwnTrainingData", ["kms:Decrypt"], [self.data_key.key.key_arn]),
            ],
            wildcard_reasons=self._wildcard_reasons(),
        )

    def _wildcard_reasons(self) -> dict[str, str]:
        """Why each wildcard resource of the task role's policy is no wider than the rule."""
        exchange = ExchangeArns(self.context)
        data_bucket_id = self.resolve(self.get_logical_id(self.data.node.default_child))  # type: ignore[arg-type]
        site_id, any_round = self.site.site_id, "*"
        nested = exchange.patterns_of(site_id, any_round)
        return {
            **{
                key: "the wildcards are the round and the stamp of a preflight report in an "
                "exact key name of this hospital's own or of the federation's public documents; "
                "the policy denies keys one level deeper, so no wildcard spans a '/'"
                for key in exchange.reads_of(site_id, any_round)
                + exchange.writes_of(site_id, any_round)
                if "*" in key
            },
            **{
                exchange.objects(key): "denied, not granted: keys deeper than any exchange key"
                for key in (*nested.nested_reads, *nested.nested_writes)
            },
            exchange_key_arns(self.context): (
                "the exchange key's id is created in the coordinating account; the statement "
                "is pinned to it by its alias (kms:ResourceAliases) and to use through S3"
            ),
            f"<{data_bucket_id}.Arn>/*": (
                "any object of this hospital's own data bucket, in its own account; the prepared "
                "training files are the bucket's only content"
            ),
        }

    def _site_policy(self) -> ssm.StringParameter | None:
        """The context's site policy as an SSM parameter of this hospital's own account, given
        to the client container as ``FEDSILO_SITE_POLICY_JSON``: ECS injects it at start with
        the task's execution role, the only role granted to read it."""
        document = self.site.site_policy_json()
        if document is None:
            return None
        fid, site_id = self.context.federation_id, self.site.site_id
        parameter = ssm.StringParameter(
            self,
            "SitePolicy",
            parameter_name=f"/fedsilo/{fid}/{site_id}/site-policy",
            string_value=document,
            description=f"fedsilo hospital {site_id}: its site policy (docs/site-policy.md)",
            tier=(
                ssm.ParameterTier.ADVANCED
                if len(document.encode()) > STANDARD_PARAMETER_BYTES
                else ssm.ParameterTier.STANDARD
            ),
        )
        self.service.container.add_secret(POLICY_JSON_ENV, ecs.Secret.from_ssm_parameter(parameter))
        return parameter

    def _client_service(self) -> FederationService:
        """``fedsilo client run`` for this site, on the GPU capacity."""
        context, site_id = self.context, self.site.site_id
        return self.add_service(
            "Client",
            container_image(
                self, "ClientImage", pinned=context.images.client, dockerfile=CLIENT_DOCKERFILE
            ),
            arguments=["client", "run", "--site-id", site_id],
            environment=task_environment(
                context, site_id=site_id, data_url=f"s3://{self.data.bucket_name}"
            ),
            logs_key=self.data_key.key,
            gpu_capacity=self.gpu,
            desired_count=context.hospital.desired_tasks,
            cpu_units=0,
            memory_mib=context.hospital.memory_mib,
        )

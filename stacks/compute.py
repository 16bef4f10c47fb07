"""ECS: a cluster, optional GPU capacity that idles at zero, and one fedsilo task as a service."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypedDict

from aws_cdk import Duration, Stack
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.context import LOG_RETENTION_CHOICES, FederationContext
from stacks.encryption import encrypted_log_group
from stacks.nag import acknowledge, acknowledge_generated_policy, skip_checkov
from stacks.network import PrivateNetwork
from stacks.trust import confine_generated_trust, ecs_source_arn, source_conditions

ECS_AGENT_POLICY = "service-role/AmazonEC2ContainerServiceforEC2Role"
"""AWS's managed policy for the ECS agent on container instances."""

ECS_AGENT_CONFIG = "/etc/ecs/ecs.config"
BLOCK_TASK_IMDS = "ECS_AWSVPC_BLOCK_IMDS=true"
"""Agent setting: awsvpc tasks cannot reach the instance metadata (and so the instance role)."""

SCRATCH_VOLUME = "scratch"
SCRATCH_PATH = "/tmp"  # noqa: S108 (a path in the container, the task's own volume)
SCRATCH_ENVIRONMENT = {
    "TMPDIR": SCRATCH_PATH,
    "XDG_CACHE_HOME": f"{SCRATCH_PATH}/cache",
    "MPLCONFIGDIR": f"{SCRATCH_PATH}/matplotlib",
    "TORCH_HOME": f"{SCRATCH_PATH}/torch",
    "TRITON_CACHE_DIR": f"{SCRATCH_PATH}/triton",
    "CUDA_CACHE_PATH": f"{SCRATCH_PATH}/nv-compute-cache",
}
"""Where the code and its libraries write temporary files and caches, all on the scratch volume.

The root filesystem is read-only and the image's home folder with it: the aggregator's spool
and Python's ``tempfile`` use ``TMPDIR``; twins, torch, Triton, CUDA and matplotlib keep their
caches under ``HOME`` unless told otherwise.
"""

_RETENTIONS = dict(
    zip(
        LOG_RETENTION_CHOICES,
        [r for r in logs.RetentionDays if r is not logs.RetentionDays.INFINITE],
        strict=True,
    )
)


def log_retention(days: int) -> logs.RetentionDays:
    """CloudWatch's retention enum for ``days`` (one of ``LOG_RETENTION_CHOICES``)."""
    return _RETENTIONS[days]


def task_role(
    scope: Construct,
    construct_id: str,
    *,
    description: str,
    role_name: str | None = None,
    path: str | None = None,
) -> iam.Role:
    """A role that only ECS tasks of this account can assume (no confused deputy)."""
    account = Stack.of(scope).account
    ecs_resources = ecs_source_arn(scope)
    return iam.Role(
        scope,
        construct_id,
        role_name=role_name,
        path=path,
        description=description,
        assumed_by=iam.ServicePrincipal(
            "ecs-tasks.amazonaws.com",
            conditions=source_conditions(account, ecs_resources),
        ),
        max_session_duration=Duration.hours(1),
    )


class FederationCluster(Construct):
    """An ECS cluster with Container Insights, in the private network."""

    def __init__(self, scope: Construct, construct_id: str, *, network: PrivateNetwork) -> None:
        super().__init__(scope, construct_id)
        self.network = network
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=network.vpc,
            container_insights_v2=ecs.ContainerInsights.ENHANCED,
        )


class GpuCapacity(Construct):
    """GPU container instances for a cluster: an Auto Scaling group from 0 to ``max_instances``.

    The ECS GPU-optimised Amazon Linux 2023 AMI (resolved from SSM at deploy), IMDSv2 only with
    a hop limit of 1, tasks barred from the metadata service by the agent, an encrypted root
    volume, no public address, a security group with no inbound rule and HTTPS out only. The
    capacity provider's managed scaling starts an instance when a GPU task is pending and
    returns to zero instances when none runs.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: FederationCluster,
        instance_type: str,
        max_instances: int,
        root_volume_gib: int,
        ebs_key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        self.security_group = cluster.network.workload_security_group(
            self,
            "InstanceSecurityGroup",
            description="GPU container instances: no inbound rule, HTTPS out to VPC endpoints",
        )
        self.role = self._instance_role()
        launch_template = self._launch_template(instance_type, root_volume_gib, ebs_key)
        self.group = self._scaling_group(cluster.network, launch_template, max_instances)
        self.provider = ecs.AsgCapacityProvider(
            self,
            "Provider",
            auto_scaling_group=self.group,
            enable_managed_scaling=True,
            enable_managed_termination_protection=True,
            target_capacity_percent=100,
        )
        cluster.cluster.add_asg_capacity_provider(self.provider)
        self._skip_agent_policy_check()

    def _skip_agent_policy_check(self) -> None:
        """The agent's grants, written by CDK once the capacity provider joins the cluster."""
        skip_checkov(
            self.role.node.find_child("DefaultPolicy"),
            "CKV_AWS_111",
            "CDK's ECS agent grants: ecs:Poll and ecs:StartTelemetrySession are held to this "
            "cluster by the ecs:cluster condition; ecs:DiscoverPollEndpoint and "
            "ecr:GetAuthorizationToken exist only on all resources; the agent's log writes "
            "leave the VPC only through the Logs endpoint, which admits this account alone.",
        )

    def _instance_role(self) -> iam.Role:
        """The ECS agent's role, with AWS's managed agent policy and CDK's draining grants.

        Its trust names EC2 without source conditions: EC2 sets neither ``aws:SourceAccount``
        nor ``aws:SourceArn`` when it delivers an instance profile's credentials, and only a
        principal of this account can pass the role to an instance (``iam:PassRole`` never
        crosses accounts).
        """
        role = iam.Role(
            self,
            "InstanceRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="ECS agent on fedsilo GPU instances",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(ECS_AGENT_POLICY)],
        )
        acknowledge(
            role,
            f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{ECS_AGENT_POLICY}]",
            "AWS's ECS agent policy, maintained by AWS as the agent's API calls change; the "
            "instance role never reaches the tasks (they have their own roles) and the "
            "instances have no route to the internet.",
        )
        acknowledge_generated_policy(role)
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "The ECS agent's calls on all resources are ecs:Poll and ecs:StartTelemetrySession, "
            "each conditioned on this cluster's ARN, and ecs:DiscoverPollEndpoint, "
            "ecr:GetAuthorizationToken and the log writes, which AWS defines on no narrower "
            "resource; the role belongs to the instances of this cluster only.",
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Action::ecs:Submit*]",
            "The ECS agent reports task and container state changes with ecs:Submit*, scoped by "
            "CDK to this cluster; the wildcard covers only the Submit*StateChange calls.",
        )
        return role

    def _launch_template(
        self, instance_type: str, root_volume_gib: int, ebs_key: kms.IKey
    ) -> ec2.LaunchTemplate:
        """GPU AMI, IMDSv2 only, no public address, an encrypted gp3 root volume.

        The agent's configuration bars awsvpc tasks from the instance metadata service, so a
        task never sees the instance role's credentials; the hop limit of 1 keeps the metadata
        service from answering anything behind the instance's own network stack.
        """
        root_volume = ec2.BlockDeviceVolume.ebs(
            root_volume_gib,
            encrypted=True,
            kms_key=ebs_key,
            volume_type=ec2.EbsDeviceVolumeType.GP3,
            delete_on_termination=True,
        )
        return ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            instance_type=ec2.InstanceType(instance_type),
            machine_image=ecs.EcsOptimizedImage.amazon_linux2023(ecs.AmiHardwareType.GPU),
            role=self.role,
            security_group=self.security_group,
            require_imdsv2=True,
            http_put_response_hop_limit=1,
            detailed_monitoring=True,
            associate_public_ip_address=False,
            user_data=self._user_data(),
            block_devices=[ec2.BlockDevice(device_name="/dev/xvda", volume=root_volume)],
        )

    @staticmethod
    def _user_data() -> ec2.UserData:
        """The agent's settings; the cluster adds its ``ECS_CLUSTER`` line to the same file."""
        user_data = ec2.UserData.for_linux()
        user_data.add_commands(f"echo {BLOCK_TASK_IMDS} >> {ECS_AGENT_CONFIG}")
        return user_data

    def _scaling_group(
        self, network: PrivateNetwork, launch_template: ec2.LaunchTemplate, max_instances: int
    ) -> autoscaling.AutoScalingGroup:
        """From 0 to ``max_instances`` instances in the private subnets, as ECS asks."""
        group = autoscaling.AutoScalingGroup(
            self,
            "Group",
            vpc=network.vpc,
            vpc_subnets=network.subnets,
            launch_template=launch_template,
            min_capacity=0,
            max_capacity=max_instances,
        )
        acknowledge(
            group,
            "AwsSolutions-AS3",
            "Scaling is driven by the ECS capacity provider (0 to max instances as GPU tasks "
            "start and stop); every scaling activity is recorded in the account's CloudTrail "
            "and the Auto Scaling activity history, so no notification topic is added.",
        )
        return group


def task_environment(
    context: FederationContext, *, site_id: str | None = None, data_url: str | None = None
) -> dict[str, str]:
    """A fedsilo task's variables: identifiers and locations, never a secret (see ECS2 below).

    ``site_id`` and ``data_url`` (the hospital's own data) are set for a hospital's client only.
    """
    variables = {
        "FEDSILO_FEDERATION_ID": context.federation_id,
        "FEDSILO_SITE_ID": site_id,
        "FEDSILO_EXCHANGE": f"s3://{context.bucket_name}",
        "FEDSILO_DATA": data_url,
        "FEDSILO_LOG_FORMAT": "json",
        "FEDSILO_LEDGER_RETENTION_DAYS": None if site_id else str(context.ledger_retention_days),
        "AWS_REGION": context.region,
    }
    return {name: value for name, value in variables.items() if value is not None}


class _ServiceOptions(TypedDict):
    """What the Fargate and the GPU service share: private, one copy at most, rolled back."""

    cluster: ecs.ICluster
    task_definition: ecs.TaskDefinition
    desired_count: int
    min_healthy_percent: int
    max_healthy_percent: int
    vpc_subnets: ec2.SubnetSelection
    security_groups: list[ec2.ISecurityGroup]
    circuit_breaker: ecs.DeploymentCircuitBreaker


class FederationService(Construct):
    """One long-running fedsilo container as an ECS service (no load balancer, no ingress).

    ``gpu_capacity`` places it on the cluster's GPU capacity provider with one GPU, otherwise
    on Fargate. Logs go to an encrypted log group with retention. At most one copy runs: a
    deployment stops the old task before starting the new one.

    The container runs with a read-only root filesystem, every Linux capability dropped and,
    on EC2, ``no-new-privileges`` (Fargate does not take Docker security options); what it
    writes goes to the task's ``scratch`` volume at ``/tmp`` (``SCRATCH_ENVIRONMENT``), or to
    a volume that its stack mounts for state kept across restarts.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: FederationCluster,
        image: ecs.ContainerImage,
        command: Sequence[str],
        environment: Mapping[str, str],
        role: iam.IRole,
        logs_key: kms.IKey,
        log_retention: logs.RetentionDays,
        desired_count: int,
        cpu_units: int,
        memory_mib: int,
        gpu_capacity: GpuCapacity | None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = encrypted_log_group(self, "Logs", key=logs_key, retention=log_retention)
        self.task_definition = self._task_definition(role, cpu_units, memory_mib, gpu_capacity)
        self.container = self.task_definition.add_container(
            "Fedsilo",
            image=image,
            command=list(command),
            environment={**SCRATCH_ENVIRONMENT, **environment},
            logging=ecs.LogDrivers.aws_logs(stream_prefix="fedsilo", log_group=self.log_group),
            memory_limit_mib=memory_mib if gpu_capacity is not None else None,
            gpu_count=1 if gpu_capacity is not None else None,
            essential=True,
            readonly_root_filesystem=True,
            linux_parameters=self._without_capabilities(),
            docker_security_options=["no-new-privileges"] if gpu_capacity is not None else None,
        )
        self._mount_scratch()
        self._acknowledge_task_findings()
        self.security_group = cluster.network.workload_security_group(
            self,
            "SecurityGroup",
            description="fedsilo task: no inbound rule; outbound HTTPS to VPC endpoints and S3",
        )
        self.service = self._service(cluster, desired_count, gpu_capacity)

    def _task_definition(
        self, role: iam.IRole, cpu_units: int, memory_mib: int, gpu_capacity: GpuCapacity | None
    ) -> ecs.TaskDefinition:
        """A Fargate task of ``cpu_units``/``memory_mib``, or an EC2 task for the GPU capacity."""
        if gpu_capacity is not None:
            return ecs.Ec2TaskDefinition(
                self, "Task", network_mode=ecs.NetworkMode.AWS_VPC, task_role=role
            )
        return ecs.FargateTaskDefinition(
            self,
            "Task",
            cpu=cpu_units,
            memory_limit_mib=memory_mib,
            task_role=role,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )

    def _without_capabilities(self) -> ecs.LinuxParameters:
        """An init process that reaps children and forwards signals; no capability at all."""
        parameters = ecs.LinuxParameters(self, "LinuxParameters", init_process_enabled=True)
        parameters.drop_capabilities(ecs.Capability.ALL)
        return parameters

    def _mount_scratch(self) -> None:
        """The task's own writable ``/tmp``, emptied when the task stops."""
        self.task_definition.add_volume(name=SCRATCH_VOLUME)
        self.container.add_mount_points(
            ecs.MountPoint(
                container_path=SCRATCH_PATH, source_volume=SCRATCH_VOLUME, read_only=False
            )
        )

    def _acknowledge_task_findings(self) -> None:
        execution_role = self.task_definition.obtain_execution_role()
        confine_generated_trust(execution_role, ecs_source_arn(self))
        acknowledge_generated_policy(execution_role)
        acknowledge(
            execution_role,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken is only defined on all resources; the execution role "
            "otherwise pulls only this task's image repository and writes only its log group.",
        )
        acknowledge(
            self.task_definition,
            "AwsSolutions-ECS2",
            "The environment holds only non-secret identifiers (federation id, site id, bucket "
            "name, region); credentials come from the task role, never from variables.",
        )

    def _service(
        self, cluster: FederationCluster, desired_count: int, gpu_capacity: GpuCapacity | None
    ) -> ecs.BaseService:
        """The service: on Fargate, or on the GPU capacity provider."""
        shared: _ServiceOptions = {
            "cluster": cluster.cluster,
            "task_definition": self.task_definition,
            "desired_count": desired_count,
            "min_healthy_percent": 0,
            "max_healthy_percent": 100,
            "vpc_subnets": cluster.network.subnets,
            "security_groups": [self.security_group],
            "circuit_breaker": ecs.DeploymentCircuitBreaker(rollback=True),
        }
        if gpu_capacity is None:
            return ecs.FargateService(
                self,
                "Service",
                **shared,
                assign_public_ip=False,
                platform_version=ecs.FargatePlatformVersion.LATEST,
            )
        provider = gpu_capacity.provider.capacity_provider_name
        return ecs.Ec2Service(
            self,
            "Service",
            **shared,
            capacity_provider_strategies=[
                ecs.CapacityProviderStrategy(capacity_provider=provider, weight=1)
            ],
        )

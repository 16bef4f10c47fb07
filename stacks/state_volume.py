"""The hospital client's state folder on EFS: its privacy budget survives a task restart.

The DP accountant (epsilon spent) and the secure-aggregation private key live in the client's
state folder. On the task's own disk they would vanish with the task, and a restarted hospital
would start spending its privacy budget again from zero. The folder is an EFS access point
instead: encrypted at rest with the hospital's own key, mounted over TLS with IAM
authorization, reachable by the client task's role only, and backed up daily.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_efs as efs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from fl_client.state_persistence import STATE_PERSISTENT_ENV
from stacks.compute import FederationService
from stacks.grants import allow, grant_managed_policy
from stacks.nag import acknowledge
from stacks.network import PrivateNetwork

CLIENT_UID = "10001"
CLIENT_GID = "10001"
"""The client image's non-root user (``USER 10001:10001`` in docker/client.Dockerfile)."""

STATE_VOLUME = "state"
STATE_PATH = "/var/lib/fedsilo"
"""Where the client task sees its state folder (``FEDSILO_STATE_DIR``)."""

ACCESS_POINT_ROOT = "/fedsilo-state"


class HospitalStateVolume(Construct):
    """An encrypted EFS file system with one access point for the client's state folder.

    The access point pins every file operation to the image's user (uid/gid 10001) under its
    own root directory, whatever the container asks. The file system policy refuses anything
    but TLS and grants nobody anything, so an NFS client without IAM credentials (anonymous)
    gets nothing; the client task's role alone may mount and write, through the access point
    and a mount target (its managed policy, ``mount_into``). Kept when the stack is deleted:
    the budget spent must outlive a redeployment.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        network: PrivateNetwork,
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=network.vpc,
            description="fedsilo state volume: NFS from the client task only, nothing out",
            allow_all_outbound=False,
        )
        self.file_system = efs.FileSystem(
            self,
            "FileSystem",
            vpc=network.vpc,
            vpc_subnets=network.subnets,
            security_group=self.security_group,
            encrypted=True,
            kms_key=key,
            enable_automatic_backups=True,
            performance_mode=efs.PerformanceMode.GENERAL_PURPOSE,
            throughput_mode=efs.ThroughputMode.ELASTIC,
            removal_policy=RemovalPolicy.RETAIN,
            # A file system policy exists (it denies non-TLS), so anonymous clients get nothing;
            # CDK's switch against anonymous access would instead grant root access and writes
            # to any principal that reaches a mount target.
            allow_anonymous_access=True,
        )
        self.access_point = self.file_system.add_access_point(
            "AccessPoint",
            path=ACCESS_POINT_ROOT,
            create_acl=efs.Acl(owner_uid=CLIENT_UID, owner_gid=CLIENT_GID, permissions="700"),
            posix_user=efs.PosixUser(uid=CLIENT_UID, gid=CLIENT_GID),
        )
        self._deny_unencrypted_transport()
        acknowledge(
            self.file_system,
            "HIPAA.Security-EFSInBackupPlan",
            "Automatic backups are on (BackupPolicy ENABLED): AWS Backup's default EFS plan "
            "backs the state volume up daily and keeps each recovery point 35 days.",
        )

    def _deny_unencrypted_transport(self) -> None:
        self.file_system.add_to_resource_policy(
            iam.PolicyStatement(
                sid="DenyUnencryptedTransport",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["*"],
                resources=["*"],
                conditions={"Bool": {"aws:SecureTransport": "false"}},
            )
        )

    def _file_system_arn(self) -> str:
        """The file system's ARN from its id, the one attribute moto's CloudFormation resolves.

        Same ARN as ``file_system_arn`` (a ``GetAtt``), which the offline walk-through of the
        operator's path (moto) cannot deploy.
        """
        return Stack.of(self).format_arn(
            service="elasticfilesystem",
            resource="file-system",
            resource_name=self.file_system.file_system_id,
        )

    def mount_into(
        self,
        service: FederationService,
        *,
        role: iam.IRole,
        network_clients: Sequence[ec2.ISecurityGroup],
    ) -> None:
        """Mount the access point at ``STATE_PATH`` in ``service`` and tell the client so.

        ``role`` (the task role) may mount and write through the access point, nothing else.
        ``network_clients`` may reach the mount targets on NFS: the task's group, and the
        container instances' where the ECS agent mounts for the task.
        """
        grant_managed_policy(
            self,
            "ClientAccess",
            role=role,
            description="fedsilo client: mount and write its own state folder, nothing else",
            statements=[
                allow(
                    "MountOwnStateFolder",
                    ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"],
                    [self._file_system_arn()],
                    {
                        "StringEquals": {
                            "elasticfilesystem:AccessPointArn": self.access_point.access_point_arn
                        },
                        "Bool": {"elasticfilesystem:AccessedViaMountTarget": "true"},
                    },
                )
            ],
            wildcard_reasons={},
        )
        service.task_definition.add_volume(
            name=STATE_VOLUME,
            efs_volume_configuration=ecs.EfsVolumeConfiguration(
                file_system_id=self.file_system.file_system_id,
                transit_encryption="ENABLED",
                authorization_config=ecs.AuthorizationConfig(
                    access_point_id=self.access_point.access_point_id, iam="ENABLED"
                ),
            ),
        )
        service.container.add_mount_points(
            ecs.MountPoint(container_path=STATE_PATH, source_volume=STATE_VOLUME, read_only=False)
        )
        service.container.add_environment("FEDSILO_STATE_DIR", STATE_PATH)
        service.container.add_environment(STATE_PERSISTENT_ENV, "efs")
        for group in network_clients:
            self.file_system.connections.allow_default_port_from(
                group, "NFS (TLS) from the fedsilo client to its state volume"
            )

"""``stacks.state_volume.HospitalStateVolume`` alone in a bare stack: an encrypted, backed-up,
retained file system whose policy refuses plain NFS, and an access point pinned to the
client image's user; once mounted into a service, its task reaches the folder over TLS with
IAM through the access point alone."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk.assertions import Template
from iamsim import simulate
from stackhelpers import BARE_ACCOUNT, BARE_REGION, bare_network, bare_stack, render, resources_of

from fl_client.state_persistence import STATE_PERSISTENT_ENV
from stacks.compute import FederationCluster, FederationService, task_role
from stacks.state_volume import (
    ACCESS_POINT_ROOT,
    CLIENT_GID,
    CLIENT_UID,
    STATE_PATH,
    STATE_VOLUME,
    HospitalStateVolume,
)

NFS_PORT = 2049


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    stack = bare_stack()
    key = kms.Key(stack, "Key")
    HospitalStateVolume(stack, "State", network=bare_network(stack, key), key=key)
    return Template.from_stack(stack).to_json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def mounted() -> dict[str, Any]:
    """The volume mounted into a client service (its own synth: mounting opens the targets)."""
    stack = bare_stack()
    key = kms.Key(stack, "Key")
    network = bare_network(stack, key)
    role = task_role(stack, "ClientRole", description="the hospital's client task")
    client = FederationService(
        stack,
        "Client",
        cluster=FederationCluster(stack, "Compute", network=network),
        image=ecs.ContainerImage.from_registry("fedsilo-client"),
        command=["client", "run"],
        environment={},
        role=role,
        logs_key=key,
        log_retention=logs.RetentionDays.ONE_YEAR,
        desired_count=1,
        cpu_units=1024,
        memory_mib=4096,
        gpu_capacity=None,
    )
    volume = HospitalStateVolume(stack, "State", network=network, key=key)
    volume.mount_into(client, role=role, network_clients=[client.security_group])
    return Template.from_stack(stack).to_json()  # type: ignore[no-any-return]


def test_the_file_system_is_encrypted_backed_up_and_kept(template: dict[str, Any]) -> None:
    (key_id,) = resources_of(template, "AWS::KMS::Key")
    (file_system,) = resources_of(template, "AWS::EFS::FileSystem").values()
    properties = file_system["Properties"]
    assert properties["Encrypted"] is True
    assert properties["KmsKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert properties["BackupPolicy"] == {"Status": "ENABLED"}
    assert file_system["DeletionPolicy"] == "Retain"


def test_its_policy_refuses_plain_nfs_and_grants_nobody_anything(template: dict[str, Any]) -> None:
    (file_system,) = resources_of(template, "AWS::EFS::FileSystem").values()
    statements = file_system["Properties"]["FileSystemPolicy"]["Statement"]
    assert [s["Effect"] for s in statements] == ["Deny"]
    (deny,) = statements
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Principal"] == {"AWS": "*"} and deny["Action"] == "*"


def test_the_access_point_pins_every_operation_to_the_client_user(
    template: dict[str, Any],
) -> None:
    (access_point,) = resources_of(template, "AWS::EFS::AccessPoint").values()
    properties = access_point["Properties"]
    assert properties["PosixUser"] == {"Uid": CLIENT_UID, "Gid": CLIENT_GID}
    assert properties["RootDirectory"] == {
        "Path": ACCESS_POINT_ROOT,
        "CreationInfo": {"OwnerUid": CLIENT_UID, "OwnerGid": CLIENT_GID, "Permissions": "700"},
    }


def test_nothing_reaches_the_mount_targets_until_a_client_is_admitted(
    template: dict[str, Any],
) -> None:
    (group_id,) = (
        logical_id
        for logical_id in resources_of(template, "AWS::EC2::SecurityGroup")
        if logical_id.startswith("StateSecurityGroup")
    )
    group = template["Resources"][group_id]["Properties"]
    assert "SecurityGroupIngress" not in group
    ingress = resources_of(template, "AWS::EC2::SecurityGroupIngress").values()
    assert not [r for r in ingress if r["Properties"]["GroupId"]["Fn::GetAtt"][0] == group_id]
    targets = resources_of(template, "AWS::EFS::MountTarget").values()
    assert len(targets) == 2
    assert all(
        t["Properties"]["SecurityGroups"] == [{"Fn::GetAtt": [group_id, "GroupId"]}]
        for t in targets
    )


def only_with_prefix(
    template: dict[str, Any], resource_type: str, prefix: str
) -> tuple[str, dict[str, Any]]:
    (found,) = (
        (logical_id, resource)
        for logical_id, resource in resources_of(template, resource_type).items()
        if logical_id.startswith(prefix)
    )
    return found


def test_mounting_gives_the_task_its_state_folder_over_tls_with_iam(
    mounted: dict[str, Any],
) -> None:
    file_system_id, _ = only_with_prefix(mounted, "AWS::EFS::FileSystem", "State")
    access_point_id, _ = only_with_prefix(mounted, "AWS::EFS::AccessPoint", "State")
    _, task = only_with_prefix(mounted, "AWS::ECS::TaskDefinition", "Client")
    (volume,) = (v for v in task["Properties"]["Volumes"] if v["Name"] == STATE_VOLUME)
    assert volume["EFSVolumeConfiguration"] == {
        "FilesystemId": {"Ref": file_system_id},
        "TransitEncryption": "ENABLED",
        "AuthorizationConfig": {"AccessPointId": {"Ref": access_point_id}, "IAM": "ENABLED"},
    }
    (container,) = task["Properties"]["ContainerDefinitions"]
    assert {
        "ContainerPath": STATE_PATH,
        "ReadOnly": False,
        "SourceVolume": STATE_VOLUME,
    } in container["MountPoints"]
    environment = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert environment["FEDSILO_STATE_DIR"] == STATE_PATH
    assert environment[STATE_PERSISTENT_ENV] == "efs"
    assert container["ReadonlyRootFilesystem"] is True  # the mount is the one place it writes


def test_mounting_opens_nfs_to_the_named_clients_only(mounted: dict[str, Any]) -> None:
    volume_group, _ = only_with_prefix(mounted, "AWS::EC2::SecurityGroup", "StateSecurityGroup")
    client_group, _ = only_with_prefix(mounted, "AWS::EC2::SecurityGroup", "ClientSecurityGroup")
    ingress = [
        rule["Properties"]
        for rule in resources_of(mounted, "AWS::EC2::SecurityGroupIngress").values()
        if rule["Properties"]["GroupId"]["Fn::GetAtt"][0] == volume_group
    ]
    assert [
        (r["SourceSecurityGroupId"], r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in ingress
    ] == [({"Fn::GetAtt": [client_group, "GroupId"]}, "tcp", NFS_PORT, NFS_PORT)]


def test_the_task_role_mounts_and_writes_through_its_access_point_and_nothing_else(
    mounted: dict[str, Any],
) -> None:
    role_id, _ = only_with_prefix(mounted, "AWS::IAM::Role", "ClientRole")
    file_system_id, _ = only_with_prefix(mounted, "AWS::EFS::FileSystem", "State")
    (policy,) = (
        p
        for p in resources_of(mounted, "AWS::IAM::ManagedPolicy").values()
        if p["Properties"]["Roles"] == [{"Ref": role_id}]
    )
    document = render(
        policy["Properties"]["PolicyDocument"], mounted, account=BARE_ACCOUNT, region=BARE_REGION
    )
    (statement,) = document["Statement"]
    own_access_point = statement["Condition"]["StringEquals"]["elasticfilesystem:AccessPointArn"]
    file_system = (
        f"arn:aws:elasticfilesystem:{BARE_REGION}:{BARE_ACCOUNT}"
        f":file-system/{file_system_id.lower()}"
    )
    other_file_system = f"{file_system[: -len(file_system_id)]}fs-another"
    other_access_point = (
        f"arn:aws:elasticfilesystem:{BARE_REGION}:{BARE_ACCOUNT}:access-point/fsap-another"
    )
    table = [
        ("Allowed", "elasticfilesystem:ClientMount", file_system, own_access_point, "true"),
        ("Allowed", "elasticfilesystem:ClientWrite", file_system, own_access_point, "true"),
        (
            "ImplicitlyDenied",
            "elasticfilesystem:ClientRootAccess",
            file_system,
            own_access_point,
            "true",
        ),
        (
            "ImplicitlyDenied",
            "elasticfilesystem:ClientMount",
            file_system,
            other_access_point,
            "true",
        ),
        (
            "ImplicitlyDenied",
            "elasticfilesystem:ClientWrite",
            file_system,
            own_access_point,
            "false",
        ),
        (
            "ImplicitlyDenied",
            "elasticfilesystem:ClientMount",
            other_file_system,
            own_access_point,
            "true",
        ),
        (
            "ImplicitlyDenied",
            "elasticfilesystem:DeleteFileSystem",
            file_system,
            own_access_point,
            "true",
        ),
    ]
    simulations = [
        {
            "request": {
                "principal": f"arn:aws:iam::{BARE_ACCOUNT}:role/client",
                "action": action,
                "resource": {"resource": resource, "accountId": BARE_ACCOUNT},
                "contextVariables": {
                    "aws:PrincipalAccount": BARE_ACCOUNT,
                    "elasticfilesystem:AccessPointArn": access_point,
                    "elasticfilesystem:AccessedViaMountTarget": via_mount_target,
                },
            },
            "identityPolicies": [{"name": "state", "policy": document}],
            "serviceControlPolicies": [],
            "resourceControlPolicies": [],
        }
        for _, action, resource, access_point, via_mount_target in table
    ]
    assert simulate(simulations) == [expected for expected, *_ in table]

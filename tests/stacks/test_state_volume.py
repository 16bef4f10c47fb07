"""``stacks.state_volume.HospitalStateVolume`` alone in a bare stack: an encrypted, backed-up,
retained file system whose policy refuses plain NFS, and an access point pinned to the
client image's user."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk.assertions import Template
from stackhelpers import BARE_REGION, bare_stack, resources_of

from stacks.network import PrivateNetwork
from stacks.state_volume import ACCESS_POINT_ROOT, CLIENT_GID, CLIENT_UID, HospitalStateVolume


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    stack = bare_stack()
    key = kms.Key(stack, "Key")
    network = PrivateNetwork(
        stack,
        "Network",
        cidr="10.0.0.0/20",
        zones=[f"{BARE_REGION}a", f"{BARE_REGION}b"],
        logs_key=key,
        log_retention=logs.RetentionDays.ONE_YEAR,
        with_ecs_instances=False,
    )
    HospitalStateVolume(stack, "State", network=network, key=key)
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

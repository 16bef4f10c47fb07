"""The hospital client's state folder: encrypted EFS, IAM and TLS on the mount, backed up."""

from __future__ import annotations

import re
from typing import Any

from aws_cdk.assertions import Match, Template
from stackhelpers import REPO, Federation, resources_of

from fl_client.state_persistence import PERSISTENT_STATE_KINDS, STATE_PERSISTENT_ENV
from stacks.images import CLIENT_DOCKERFILE
from stacks.state_volume import CLIENT_GID, CLIENT_UID, STATE_PATH


def only(resources: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    ((logical_id, resource),) = resources.items()
    return logical_id, resource


def test_state_volume_is_encrypted_with_the_hospitals_key_backed_up_and_kept(
    federation: Federation,
) -> None:
    template = federation.template_json(federation.hospitals[0])
    _, file_system = only(resources_of(template, "AWS::EFS::FileSystem"))
    props = file_system["Properties"]
    key_id, _ = only(resources_of(template, "AWS::KMS::Key"))
    assert props["Encrypted"] is True
    assert props["KmsKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert props["BackupPolicy"] == {"Status": "ENABLED"}
    assert file_system["DeletionPolicy"] == file_system["UpdateReplacePolicy"] == "Retain"
    (statement,) = props["FileSystemPolicy"]["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_access_point_is_the_client_images_user() -> None:
    dockerfile = (REPO / CLIENT_DOCKERFILE).read_text()
    users = re.findall(r"^USER\s+(\d+):(\d+)\s*$", dockerfile, flags=re.MULTILINE)
    assert users[-1] == (CLIENT_UID, CLIENT_GID)


def test_access_point_pins_the_user_and_a_private_root(hospital_template: Template) -> None:
    user = {"Uid": CLIENT_UID, "Gid": CLIENT_GID}
    hospital_template.has_resource_properties(
        "AWS::EFS::AccessPoint",
        {
            "PosixUser": user,
            "RootDirectory": {
                "Path": Match.string_like_regexp("^/[a-z-]+$"),
                "CreationInfo": {
                    "OwnerUid": CLIENT_UID,
                    "OwnerGid": CLIENT_GID,
                    "Permissions": "700",
                },
            },
        },
    )


def test_client_task_mounts_it_over_tls_with_iam_at_its_state_folder(
    federation: Federation,
) -> None:
    template = federation.template_json(federation.hospitals[0])
    file_system_id, _ = only(resources_of(template, "AWS::EFS::FileSystem"))
    access_point_id, _ = only(resources_of(template, "AWS::EFS::AccessPoint"))
    _, task = only(resources_of(template, "AWS::ECS::TaskDefinition"))
    (volume,) = [v for v in task["Properties"]["Volumes"] if "EFSVolumeConfiguration" in v]
    assert volume["EFSVolumeConfiguration"] == {
        "FilesystemId": {"Ref": file_system_id},
        "TransitEncryption": "ENABLED",
        "AuthorizationConfig": {"AccessPointId": {"Ref": access_point_id}, "IAM": "ENABLED"},
    }
    (container,) = task["Properties"]["ContainerDefinitions"]
    assert {
        "ContainerPath": STATE_PATH,
        "ReadOnly": False,
        "SourceVolume": volume["Name"],
    } in container["MountPoints"]
    environment = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert environment["FEDSILO_STATE_DIR"] == STATE_PATH
    assert environment[STATE_PERSISTENT_ENV] in PERSISTENT_STATE_KINDS


def test_only_the_client_role_may_mount_through_the_access_point(
    federation: Federation,
) -> None:
    template = federation.template_json(federation.hospitals[0])
    file_system_id, _ = only(resources_of(template, "AWS::EFS::FileSystem"))
    access_point_id, _ = only(resources_of(template, "AWS::EFS::AccessPoint"))
    grants = [
        (policy["Properties"]["Roles"], statement)
        for policy in resources_of(template, "AWS::IAM::ManagedPolicy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if any(str(a).startswith("elasticfilesystem:") for a in statement["Action"])
    ]
    assert len(grants) == 1
    roles, statement = grants[0]
    client_role = [
        logical_id
        for logical_id, role in resources_of(template, "AWS::IAM::Role").items()
        if role["Properties"].get("RoleName", "").endswith(federation.context.hospitals[0].site_id)
    ]
    assert roles == [{"Ref": client_role[0]}]
    assert statement["Action"] == ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
    file_system_arn = statement["Resource"]["Fn::Join"][1]
    site = federation.context.hospitals[0]
    own = f":elasticfilesystem:{federation.context.region}:{site.account_id}:file-system/"
    assert file_system_arn[-2:] == [own, {"Ref": file_system_id}]
    access_point_arn = statement["Condition"]["StringEquals"]["elasticfilesystem:AccessPointArn"]
    assert {"Ref": access_point_id} in access_point_arn["Fn::Join"][1]
    assert statement["Condition"]["Bool"] == {"elasticfilesystem:AccessedViaMountTarget": "true"}


def test_nfs_reaches_the_volume_only_from_the_client_task_and_its_instances(
    federation: Federation,
) -> None:
    template = federation.template_json(federation.hospitals[0])
    mount_groups = {
        group["Fn::GetAtt"][0]
        for target in resources_of(template, "AWS::EFS::MountTarget").values()
        for group in target["Properties"]["SecurityGroups"]
    }
    assert len(mount_groups) == 1
    nfs_sources = {
        rule["Properties"]["SourceSecurityGroupId"]["Fn::GetAtt"][0]
        for rule in resources_of(template, "AWS::EC2::SecurityGroupIngress").values()
        if rule["Properties"]["GroupId"]["Fn::GetAtt"][0] in mount_groups
        and rule["Properties"]["FromPort"] == rule["Properties"]["ToPort"] == 2049
    }
    task_group = _service_group(template)
    instance_group = _launch_template_group(template)
    assert nfs_sources == {task_group, instance_group}


def test_the_aggregator_has_no_state_volume(federation: Federation) -> None:
    template = federation.template_json(federation.aggregator)
    assert resources_of(template, "AWS::EFS::FileSystem") == {}


def _service_group(template: dict[str, Any]) -> str:
    _, service = only(resources_of(template, "AWS::ECS::Service"))
    network = service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]
    (group,) = network["SecurityGroups"]
    logical_id: str = group["Fn::GetAtt"][0]
    return logical_id


def _launch_template_group(template: dict[str, Any]) -> str:
    _, launch_template = only(resources_of(template, "AWS::EC2::LaunchTemplate"))
    (interface,) = launch_template["Properties"]["LaunchTemplateData"]["NetworkInterfaces"]
    (group,) = interface["Groups"]
    logical_id: str = group["Fn::GetAtt"][0]
    return logical_id

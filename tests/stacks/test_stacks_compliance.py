"""cdk-nag (AWS Solutions, HIPAA Security) and cfn-lint on every synthesised template."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks
from cfnlint.api import ManualArgs, lint
from constructs import IConstruct
from stackhelpers import Federation

from stacks.nag import CHECKOV_METADATA, skip_checkov

ACKNOWLEDGED = "aws:cdk:acknowledged-rules"


def findings(app: cdk.App) -> list[str]:
    out = []
    for pack in (AwsSolutionsChecks(), HIPAASecurityChecks()):
        report = pack.validate_scope(app)
        out += [
            f"{v.rule_name} at {r.construct_path}"
            for v in report.violations
            for r in v.violating_resources
        ]
    return out


@pytest.mark.parametrize("variant", ["federation", "gpu_federation"])
def test_no_unacknowledged_nag_findings(variant: str, request: pytest.FixtureRequest) -> None:
    federation: Federation = request.getfixturevalue(variant)
    assert findings(federation.app) == []


def test_nag_does_report_what_is_not_acknowledged() -> None:
    """Guard against a silent pass: an unlogged bucket must be found."""
    app = cdk.App()
    stack = cdk.Stack(app, "Probe")
    s3.Bucket(stack, "Plain", enforce_ssl=True)
    assert any("AwsSolutions-S1" in finding for finding in findings(app))


def walk(construct: IConstruct) -> list[IConstruct]:
    return [construct, *[c for child in construct.node.children for c in walk(child)]]


def test_acknowledgments_name_one_resource_and_give_a_reason(federation: Federation) -> None:
    seen = 0
    for construct in walk(federation.app):
        for entry in construct.node.metadata:
            if entry.type != ACKNOWLEDGED:
                continue
            assert not isinstance(construct, cdk.Stage | cdk.Stack), (
                f"blanket acknowledgment on {construct.node.path}: {entry.data}"
            )
            for rule, reason in entry.data.items():
                seen += 1
                assert len(reason) >= 40, (construct.node.path, rule)
    assert seen > 0


@pytest.mark.parametrize("variant", ["federation", "gpu_federation"])
def test_cfn_lint_is_clean_on_every_template(variant: str, request: pytest.FixtureRequest) -> None:
    federation: Federation = request.getfixturevalue(variant)
    files = federation.template_files()
    assert len(files) == 1 + len(federation.hospitals)
    problems = []
    for path in files:
        matches = lint(
            Path(path).read_text(), config=ManualArgs(regions=[federation.context.region])
        )
        problems += [f"{path.name}: {m.rule.id} {m.message} (line {m.linenumber})" for m in matches]
    assert problems == []


def test_cfn_lint_reports_warnings_with_this_configuration() -> None:
    """Guard against a silent pass: a hard-coded zone is a warning (W3010)."""
    template = (
        '{"Resources": {"Subnet": {"Type": "AWS::EC2::Subnet", "Properties": '
        '{"VpcId": "vpc-123", "CidrBlock": "10.0.0.0/24", "AvailabilityZone": "eu-west-1a"}}}}'
    )
    assert "W3010" in [m.rule.id for m in lint(template, config=ManualArgs(regions=["eu-west-1"]))]


def test_checkov_skips_sit_on_resources_with_a_reason(federation: Federation) -> None:
    skips = []
    for path in federation.template_files():
        template = json.loads(path.read_text())
        for section in ("Parameters", "Outputs", "Conditions"):
            assert CHECKOV_METADATA not in json.dumps(template.get(section, {}))
        assert CHECKOV_METADATA not in template.get("Metadata", {})
        for logical_id, resource in template["Resources"].items():
            for skip in resource.get("Metadata", {}).get(CHECKOV_METADATA, {}).get("skip", []):
                assert set(skip) == {"id", "comment"}, (logical_id, skip)
                assert re.fullmatch(r"CKV_AWS_\d+", skip["id"]), (logical_id, skip)
                assert len(skip["comment"]) >= 40, (logical_id, skip)
                skips.append((resource["Type"], skip["id"]))
    assert ("AWS::S3::Bucket", "CKV_AWS_18") in skips
    assert len(skips) == len(federation.template_files()) + 1 + len(federation.hospitals)


def test_skip_checkov_keeps_one_entry_per_check_and_refuses_a_short_reason() -> None:
    app = cdk.App()
    stack = cdk.Stack(app, "Probe")
    bucket = s3.Bucket(stack, "Plain", enforce_ssl=True)
    reason = "a reason long enough for a security officer to read and accept"
    skip_checkov(bucket, "CKV_AWS_18", reason)
    skip_checkov(bucket, "CKV_AWS_21", reason)
    skip_checkov(bucket, "CKV_AWS_18", reason + ", restated")
    cfn_bucket = bucket.node.default_child
    assert isinstance(cfn_bucket, cdk.CfnResource)
    assert cfn_bucket.get_metadata(CHECKOV_METADATA) == {
        "skip": [
            {"id": "CKV_AWS_21", "comment": reason},
            {"id": "CKV_AWS_18", "comment": reason + ", restated"},
        ]
    }
    with pytest.raises(ValueError, match="real reason"):
        skip_checkov(bucket, "CKV_AWS_19", "not needed")

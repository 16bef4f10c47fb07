"""cdk-nag (AWS Solutions, HIPAA Security) and cfn-lint on every synthesised template."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks
from cfnlint.api import ManualArgs, lint
from constructs import IConstruct
from stackhelpers import Federation

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

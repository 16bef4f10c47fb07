"""A hospital's site policy in its stack: validated at synth, an SSM parameter of its own
account, injected into its client task only; the centre's roles get nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks
from stackhelpers import Federation, hospitals_context, resources_of, synthesise

from fl_core.errors import ConfigError
from fl_core.site_policy import POLICY_JSON_ENV, parse_site_policy
from stacks.context import parse_context

POLICY = {
    "site_id": "site-000",
    "epsilon_budget": 6.0,
    "disclosure_floor": {"min_stays": 10, "min_events": 5},
    "studies": [
        {
            "federation_id": "sepsis",
            "config_hashes": ["a" * 64],
            "architecture_digests": ["b" * 64],
            "dp_sgd_max_epsilon": 3.0,
        }
    ],
}


def with_policy(tmp_path: Path, policy: dict[str, Any]) -> dict[str, Any]:
    path = tmp_path / "site-policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    raw = hospitals_context(1)
    raw["hospitals"][0]["site_policy"] = str(path)
    return raw


@pytest.fixture(scope="module")
def policed(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    folder = tmp_path_factory.mktemp("policy")
    return synthesise(with_policy(folder, POLICY), tmp_path_factory.mktemp("cdk-out-policy"))


def statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every IAM policy statement of a template, with the logical id of its policy."""
    found = []
    for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for logical_id, resource in resources_of(template, kind).items():
            for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
                found.append((logical_id, statement))
    return found


def test_the_policy_is_a_parameter_injected_into_the_client_task(policed: Federation) -> None:
    template = policed.template_json(policed.hospitals[0])
    (parameter_id, parameter), *others = resources_of(template, "AWS::SSM::Parameter").items()
    assert not others
    assert parameter["Properties"]["Type"] == "String"
    stored = parse_site_policy(parameter["Properties"]["Value"], "the parameter")
    assert stored == parse_site_policy(yaml.safe_dump(POLICY), "the file")
    (task,) = resources_of(template, "AWS::ECS::TaskDefinition").values()
    (container,) = task["Properties"]["ContainerDefinitions"]
    (secret,) = container["Secrets"]
    assert secret["Name"] == POLICY_JSON_ENV
    assert parameter_id in json.dumps(secret["ValueFrom"])
    execution_role = task["Properties"]["ExecutionRoleArn"]["Fn::GetAtt"][0]
    readers = [
        (policy_id, statement)
        for policy_id, statement in statements(template)
        if parameter_id in json.dumps(statement.get("Resource"))
    ]
    assert readers, "the execution role must be granted the parameter"
    for policy_id, statement in readers:
        roles = template["Resources"][policy_id]["Properties"].get("Roles", [])
        assert roles == [{"Ref": execution_role}]
        assert statement["Effect"] == "Allow"
        assert all(action.startswith("ssm:Get") or action == "ssm:DescribeParameters"
                   for action in statement["Action"])  # fmt: skip
    endpoints = resources_of(template, "AWS::EC2::VPCEndpoint").values()
    assert any("ssm" in json.dumps(e["Properties"]["ServiceName"]) for e in endpoints)


def test_the_centre_gets_nothing_of_the_policy(policed: Federation) -> None:
    aggregator = policed.template_json(policed.aggregator)
    assert not resources_of(aggregator, "AWS::SSM::Parameter")
    assert "site-policy" not in json.dumps(aggregator)
    assert "ssm:" not in json.dumps(aggregator)


def test_a_policed_hospital_stack_has_no_unacknowledged_nag_finding(policed: Federation) -> None:
    violations = []
    for pack in (AwsSolutionsChecks(), HIPAASecurityChecks()):
        report = pack.validate_scope(policed.app)
        violations += [
            f"{v.rule_name} at {r.construct_path}"
            for v in report.violations
            for r in v.violating_resources
        ]
    assert violations == []


def test_a_hospital_without_a_policy_has_no_parameter_or_endpoint(tmp_path: Path) -> None:
    federation = synthesise(hospitals_context(1), tmp_path)
    template = federation.template_json(federation.hospitals[0])
    assert not resources_of(template, "AWS::SSM::Parameter")
    endpoints = resources_of(template, "AWS::EC2::VPCEndpoint").values()
    assert not any(".ssm" in json.dumps(e["Properties"]["ServiceName"]) for e in endpoints)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"approve_all": True}, "approve_all: unknown key"),
        ({"site_id": "site-009"}, "is site site-009's, not site-000's"),
        ({"epsilon_budget": -1}, "epsilon_budget"),
    ],
)
def test_a_wrong_policy_stops_synthesis_naming_the_hospital(
    tmp_path: Path, change: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_context(with_policy(tmp_path, {**POLICY, **change}))
    assert "hospitals.0" in str(refused.value)
    assert needle in str(refused.value)


def test_a_missing_policy_file_stops_synthesis(tmp_path: Path) -> None:
    raw = hospitals_context(1)
    raw["hospitals"][0]["site_policy"] = str(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not found"):
        parse_context(raw)

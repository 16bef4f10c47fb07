"""Helpers of the CDK tests (a uniquely named module: ``tests/`` holds several conftest.py)."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk.assertions import Template

from stacks.aggregator import AggregatorStack
from stacks.context import CONTEXT_KEY, FederationContext, parse_context
from stacks.federation import FEATURE_FLAGS, build_federation
from stacks.hospital import HospitalStack
from stacks.network import PrivateNetwork

REPO = Path(__file__).resolve().parents[2]


def cdk_json_context() -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((REPO / "cdk.json").read_text())["context"][CONTEXT_KEY]
    return raw


@dataclass
class Federation:
    """A synthesised app and what the tests read from it."""

    app: cdk.App
    context: FederationContext
    aggregator: AggregatorStack
    hospitals: list[HospitalStack]
    outdir: Path

    def template(self, stack: cdk.Stack) -> Template:
        return Template.from_stack(stack)

    def template_json(self, stack: cdk.Stack) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.outdir / stack.template_file).read_text())
        return data

    def template_files(self) -> list[Path]:
        return sorted(self.outdir.glob("*.template.json"))


def synthesise(raw_context: dict[str, Any], outdir: Path) -> Federation:
    app = cdk.App(outdir=str(outdir))
    context = parse_context(raw_context)
    aggregator, hospitals = build_federation(app, context)
    app.synth()
    return Federation(app, context, aggregator, hospitals, outdir)


def synthesise_aggregator(raw_context: dict[str, Any], outdir: Path) -> Federation:
    """Only the coordinating stack (``hospitals`` empty): for policy tests, a few seconds."""
    app = cdk.App(outdir=str(outdir))
    for flag, value in FEATURE_FLAGS.items():
        app.node.set_context(flag, value)
    context = parse_context(raw_context)
    aggregator = AggregatorStack(app, "FedsiloAggregator", context=context)
    app.synth()
    return Federation(app, context, aggregator, [], outdir)


BARE_ACCOUNT = "111111111111"
BARE_REGION = "eu-west-1"


def bare_stack(name: str = "Bare") -> cdk.Stack:
    """An empty stack in a fixed account and region, under the app's feature flags: where a
    construct test instantiates one construct and reads what it alone synthesises."""
    app = cdk.App()
    for flag, value in FEATURE_FLAGS.items():
        app.node.set_context(flag, value)
    return cdk.Stack(app, name, env=cdk.Environment(account=BARE_ACCOUNT, region=BARE_REGION))


def bare_network(
    stack: cdk.Stack,
    key: kms.IKey,
    *,
    with_ecs_instances: bool = False,
    with_parameters: bool = False,
) -> PrivateNetwork:
    """The private network a construct test puts its construct in: two zones, logs under
    ``key``, kept a year."""
    return PrivateNetwork(
        stack,
        "Network",
        cidr="10.0.0.0/20",
        zones=[f"{BARE_REGION}a", f"{BARE_REGION}b"],
        logs_key=key,
        log_retention=logs.RetentionDays.ONE_YEAR,
        with_ecs_instances=with_ecs_instances,
        with_parameters=with_parameters,
    )


def hospitals_context(count: int) -> dict[str, Any]:
    raw = copy.deepcopy(cdk_json_context())
    raw["hospitals"] = [
        {"site_id": f"site-{index:03d}", "account_id": f"{200000000000 + index}"}
        for index in range(count)
    ]
    return raw


def resources_of(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == resource_type
    }


def render(value: Any, template: dict[str, Any], *, account: str, region: str) -> Any:
    """Resolve the intrinsics CDK uses in policies (Join, Ref pseudo, GetAtt Arn) to strings.

    Enough to read a synthesised policy the way IAM will see it after deploy; buckets and keys
    get placeholder names derived from their logical id.
    """
    if isinstance(value, list):
        return [render(item, template, account=account, region=region) for item in value]
    if not isinstance(value, dict):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(
            str(render(p, template, account=account, region=region)) for p in parts
        )
    if "Ref" in value:
        ref = value["Ref"]
        pseudo = {
            "AWS::Partition": "aws",
            "AWS::AccountId": account,
            "AWS::Region": region,
            "AWS::URLSuffix": "amazonaws.com",
        }
        if ref in pseudo:
            return pseudo[ref]
        if ref not in template["Resources"]:  # a parameter
            return f"<{ref}>"
        resource = template["Resources"][ref]
        name = resource.get("Properties", {}).get("BucketName")
        return name if isinstance(name, str) else ref.lower()
    if "Fn::GetAtt" in value:
        logical_id, attribute = value["Fn::GetAtt"]
        resource = template["Resources"][logical_id]
        if resource["Type"] == "AWS::S3::Bucket" and attribute == "Arn":
            name = resource.get("Properties", {}).get("BucketName", logical_id.lower())
            return f"arn:aws:s3:::{name}"
        if resource["Type"] == "AWS::KMS::Key" and attribute == "Arn":
            return f"arn:aws:kms:{region}:{account}:key/{logical_id.lower()}"
        return f"{logical_id}.{attribute}"
    return {
        key: render(item, template, account=account, region=region) for key, item in value.items()
    }

"""The exchange's synthesised policies, and a real IAM evaluator to ask about them.

``simulate`` sends a whole batch of requests to ``iam_simulate.mjs`` (one ``node`` process
per call: tests build their table first and ask once) and returns one decision per request:
``Allowed``, ``ExplicitlyDenied`` or ``ImplicitlyDenied``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackhelpers import REPO, Federation, render, resources_of

from fl_core.exchange.layout import ExchangeLayout
from stacks.context import SITE_TAG_KEY, exchange_key_alias, hospital_role_arn

SCRIPT = Path(__file__).with_name("iam_simulate.mjs")
PACKAGE = REPO / "node_modules" / "@cloud-copilot" / "iam-simulate"

ALLOW_EVERYTHING: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}
"""What a hospital administrator could attach to her own task role."""


def simulate(simulations: list[dict[str, Any]]) -> list[str]:
    """The evaluator's decision for each simulation, in order (one node process)."""
    if shutil.which("node") is None or not PACKAGE.is_dir():
        raise RuntimeError(
            f"{PACKAGE} is missing: run `make node_modules/.package-lock.json` (npm ci) first"
        )
    done = subprocess.run(
        ["node", str(SCRIPT)],
        input=json.dumps({"simulations": simulations}),
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        timeout=600,
    )
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(answers) == len(simulations), done.stderr
    errors = [
        (s["request"], a["error"])
        for s, a in zip(simulations, answers, strict=True)
        if "error" in a
    ]
    assert not errors, f"the evaluator refused {len(errors)} requests, e.g. {errors[0]}"
    return [str(answer["result"]) for answer in answers]


@dataclass(frozen=True)
class ExchangePolicies:
    """The policies of one synthesised federation, rendered as IAM will see them."""

    bucket_name: str
    bucket_policy: dict[str, Any]
    key_arn: str
    key_policy: dict[str, Any]
    identity: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each hospital's exchange policy (its HospitalStack's managed policy), by site id."""


def aggregator_resources(federation: Federation) -> dict[str, Any]:
    ctx = federation.context
    template = federation.template_json(federation.aggregator)
    return {
        "Resources": render(
            template["Resources"], template, account=ctx.coordinating_account, region=ctx.region
        )
    }


def exchange_policies(federation: Federation, *, with_identity: bool = True) -> ExchangePolicies:
    ctx = federation.context
    out = aggregator_resources(federation)
    [bucket_policy] = [
        r["Properties"]["PolicyDocument"]
        for r in resources_of(out, "AWS::S3::BucketPolicy").values()
        if r["Properties"]["Bucket"] == ctx.bucket_name
    ]
    [(key_id, key)] = [
        (logical_id, r)
        for logical_id, r in resources_of(out, "AWS::KMS::Key").items()
        if "exchange" in r["Properties"]["Description"]
    ]
    identity = {}
    stacks = zip(federation.hospitals, ctx.hospitals, strict=True) if with_identity else []
    for stack, site in stacks:
        template = federation.template_json(stack)
        [policy] = [
            r["Properties"]["PolicyDocument"]
            for r in resources_of(template, "AWS::IAM::ManagedPolicy").values()
            if "exchange rights" in r["Properties"]["Description"]
        ]
        identity[site.site_id] = render(
            policy, template, account=site.account_id, region=ctx.region
        )
    return ExchangePolicies(
        bucket_name=ctx.bucket_name,
        bucket_policy=bucket_policy,
        key_arn=f"arn:aws:kms:{ctx.region}:{ctx.coordinating_account}:key/{key_id.lower()}",
        key_policy=key["Properties"]["KeyPolicy"],
        identity=identity,
    )


@dataclass(frozen=True)
class Caller:
    """Who sends a request: a role ARN and the site-id tag on it (or on its session)."""

    arn: str
    site_tag: str | None

    @classmethod
    def hospital(cls, federation_id: str, site_id: str, account_id: str) -> Caller:
        from stacks.context import HospitalSite

        site = HospitalSite(site_id=site_id, account_id=account_id)
        return cls(hospital_role_arn(federation_id, site), site_id)

    @property
    def account(self) -> str:
        return self.arn.split(":")[4]

    def context(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "aws:PrincipalArn": self.arn,
            "aws:PrincipalAccount": self.account,
            "aws:SecureTransport": "true",
        }
        if self.site_tag is not None:
            values[f"aws:PrincipalTag/{SITE_TAG_KEY}"] = self.site_tag
        return values


@dataclass(frozen=True)
class Encryption:
    """The encryption headers of a PutObject (none: the bucket default, the exchange key)."""

    algorithm: str | None = None
    key_id: str | None = None
    customer_algorithm: str | None = None

    def context(self) -> dict[str, str]:
        values = {
            "s3:x-amz-server-side-encryption": self.algorithm,
            "s3:x-amz-server-side-encryption-aws-kms-key-id": self.key_id,
            "s3:x-amz-server-side-encryption-customer-algorithm": self.customer_algorithm,
        }
        return {k: v for k, v in values.items() if v is not None}


def s3_simulation(
    policies: ExchangePolicies,
    caller: Caller,
    action: str,
    key: str | None,
    *,
    identity: dict[str, Any],
    resource_account: str,
    encryption: Encryption | None = None,
    if_none_match: bool = True,
    secure: bool = True,
    bucket_policy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    context = caller.context()
    if not secure:
        context["aws:SecureTransport"] = "false"
    if action == "s3:PutObject":
        context["s3:ObjectCreationOperation"] = "true"
        if if_none_match:
            context["s3:if-none-match"] = "*"
        context.update((encryption or Encryption()).context())
    resource = f"arn:aws:s3:::{policies.bucket_name}" + ("" if key is None else f"/{key}")
    return {
        "request": {
            "principal": caller.arn,
            "action": action,
            "resource": {"resource": resource, "accountId": resource_account},
            "contextVariables": context,
        },
        "identityPolicies": [{"name": "exchange", "policy": identity}],
        "serviceControlPolicies": [],
        "resourceControlPolicies": [],
        "resourcePolicy": bucket_policy or policies.bucket_policy,
    }


def kms_simulation(
    policies: ExchangePolicies,
    caller: Caller,
    action: str,
    key: str,
    *,
    identity: dict[str, Any],
    resource_account: str,
    layout: ExchangeLayout,
    region: str,
    via_s3: bool = True,
    key_policy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """KMS as S3 calls it for the caller: the object's ARN as encryption context."""
    context = caller.context()
    context["kms:EncryptionContext:aws:s3:arn"] = f"arn:aws:s3:::{policies.bucket_name}/{key}"
    context["kms:ResourceAliases"] = [exchange_key_alias(layout.federation_id)]
    if via_s3:
        context["kms:ViaService"] = f"s3.{region}.amazonaws.com"
    return {
        "request": {
            "principal": caller.arn,
            "action": action,
            "resource": {"resource": policies.key_arn, "accountId": resource_account},
            "contextVariables": context,
        },
        "identityPolicies": [{"name": "exchange", "policy": identity}],
        "serviceControlPolicies": [],
        "resourceControlPolicies": [],
        "resourcePolicy": key_policy or policies.key_policy,
    }

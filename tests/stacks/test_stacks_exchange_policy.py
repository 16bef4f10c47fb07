"""The exchange's bucket and key policies, read from the synthesised template, against real keys.

moto does not evaluate bucket policies for principals of other accounts, KMS key policies, or
policy variables (``${aws:PrincipalTag/...}``), so the cross-account half of the IAM rule is
checked here instead: a small evaluator applies the synthesised statements (Allow/Deny,
NotAction/NotResource, the condition operators they use) to requests for keys built by
``fl_core.exchange.layout.ExchangeLayout``. It refuses any operator it does not know, so a
policy change cannot silently escape it. The identity-policy half runs in moto with IAM
enforcement (``test_stacks_isolation_moto.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from stackhelpers import Federation, resources_of

from fl_core.exchange.layout import ExchangeLayout
from stacks.context import SITE_TAG_KEY, hospital_role_arn

ROUND = 7


def iam_match(pattern: str, value: str, variables: dict[str, str], *, glob: bool) -> bool:
    for name, substitute in variables.items():
        pattern = pattern.replace("${" + name + "}", substitute)
    if "${" in pattern:  # a variable without a value never matches
        return False
    if not glob:
        return pattern == value
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value) is not None


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@dataclass
class Request:
    principal_arn: str
    action: str
    resource: str
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def account(self) -> str:
        return self.principal_arn.split(":")[4]

    def context(self) -> dict[str, str]:
        base = {
            "aws:PrincipalArn": self.principal_arn,
            "aws:PrincipalAccount": self.account,
            "aws:SecureTransport": "true",
        }
        return {**base, **self.keys}


def condition_holds(operator: str, key: str, expected: Any, ctx: dict[str, str]) -> bool:
    values = [str(v) for v in as_list(expected)]
    variables = {k: v for k, v in ctx.items() if k.startswith("aws:PrincipalTag/")}
    present = key in ctx
    actual = ctx.get(key, "")
    if operator in ("StringEquals", "ArnEquals"):
        return present and any(iam_match(v, actual, variables, glob=False) for v in values)
    if operator in ("StringLike", "ArnLike"):
        return present and any(iam_match(v, actual, variables, glob=True) for v in values)
    if operator == "StringNotEquals":
        return not present or not any(iam_match(v, actual, variables, glob=False) for v in values)
    if operator == "Bool":
        return present and actual.lower() in [v.lower() for v in values]
    if operator == "Null":
        return (not present) == (values[0] == "true")
    if operator == "ForAnyValue:StringEquals":
        return present and actual in values
    raise AssertionError(f"evaluator does not know {operator}; extend it before using it")


def statement_applies(statement: dict[str, Any], request: Request) -> bool:
    principal = statement.get("Principal")
    if principal not in ({"AWS": "*"}, "*"):
        # An account root or a service principal: only callers of that account or service.
        accounts = [p.split(":")[4] for p in as_list(principal.get("AWS", []))]
        if request.account not in accounts:
            return False
    ctx = request.context()
    variables = {k: v for k, v in ctx.items() if k.startswith("aws:PrincipalTag/")}
    if "Action" in statement:
        if not any(
            iam_match(a, request.action, {}, glob=True) for a in as_list(statement["Action"])
        ):
            return False
    elif any(iam_match(a, request.action, {}, glob=True) for a in as_list(statement["NotAction"])):
        return False
    if "Resource" in statement:
        if not any(
            iam_match(r, request.resource, variables, glob=True)
            for r in as_list(statement["Resource"])
        ):
            return False
    elif any(
        iam_match(r, request.resource, variables, glob=True)
        for r in as_list(statement["NotResource"])
    ):
        return False
    for operator, pairs in statement.get("Condition", {}).items():
        for key, expected in pairs.items():
            if not condition_holds(operator, key, expected, ctx):
                return False
    return True


def decide(policy: dict[str, Any], request: Request) -> str:
    """'deny' (explicit), 'allow', or 'none' (no statement allows it)."""
    statements = policy["Statement"]
    if any(s["Effect"] == "Deny" and statement_applies(s, request) for s in statements):
        return "deny"
    if any(s["Effect"] == "Allow" and statement_applies(s, request) for s in statements):
        return "allow"
    return "none"


@pytest.fixture(scope="module")
def policies(federation: Federation, rendered: Any) -> dict[str, Any]:
    template = federation.template_json(federation.aggregator)
    ctx = federation.context
    out = {
        "Resources": rendered(
            template["Resources"], template, account=ctx.coordinating_account, region=ctx.region
        )
    }
    bucket_name = ctx.bucket_name
    [bucket_policy] = [
        r["Properties"]["PolicyDocument"]
        for r in resources_of(out, "AWS::S3::BucketPolicy").values()
        if r["Properties"]["Bucket"] == bucket_name
    ]
    [key] = [
        r
        for r in resources_of(out, "AWS::KMS::Key").values()
        if "exchange" in r["Properties"]["Description"]
    ]
    return {"bucket": bucket_policy, "key": key["Properties"]["KeyPolicy"], "name": bucket_name}


@pytest.fixture(scope="module")
def layout(federation: Federation) -> ExchangeLayout:
    return ExchangeLayout(federation.context.federation_id)


@pytest.fixture(scope="module")
def sites(federation: Federation) -> dict[str, str]:
    """site id -> its task role ARN, for the first two hospitals."""
    ctx = federation.context
    return {site.site_id: hospital_role_arn(ctx.federation_id, site) for site in ctx.hospitals[:2]}


def s3_request(
    arn: str,
    site_tag: str | None,
    action: str,
    bucket: str,
    key: str | None,
    *,
    if_none_match: bool = True,
) -> Request:
    keys = {}
    if site_tag is not None:
        keys[f"aws:PrincipalTag/{SITE_TAG_KEY}"] = site_tag
    if action == "s3:PutObject":
        keys["s3:ObjectCreationOperation"] = "true"
        if if_none_match:
            keys["s3:if-none-match"] = "*"
    resource = f"arn:aws:s3:::{bucket}" + (f"/{key}" if key is not None else "")
    return Request(arn, action, resource, keys)


def test_a_hospital_reads_globals_and_its_registry_and_writes_its_updates(
    policies: dict[str, Any], layout: ExchangeLayout, sites: dict[str, str]
) -> None:
    a, arn_a = next(iter(sites.items()))
    bucket = policies["name"]
    allowed = [
        ("s3:GetObject", layout.global_weights_key(ROUND)),
        ("s3:GetObject", layout.global_manifest_key(ROUND)),
        ("s3:GetObject", layout.registry_key(a)),
        ("s3:PutObject", layout.update_weights_key(ROUND, a)),
        ("s3:PutObject", layout.update_manifest_key(ROUND, a)),
    ]
    for action, key in allowed:
        assert decide(policies["bucket"], s3_request(arn_a, a, action, bucket, key)) == "allow", key


def test_a_hospital_touches_nothing_else(
    policies: dict[str, Any], layout: ExchangeLayout, sites: dict[str, str]
) -> None:
    (a, arn_a), (b, _) = list(sites.items())
    bucket = policies["name"]
    refused = [
        ("s3:GetObject", layout.update_weights_key(ROUND, b)),
        ("s3:GetObject", layout.update_manifest_key(ROUND, b)),
        ("s3:PutObject", layout.update_weights_key(ROUND, b)),
        ("s3:PutObject", layout.update_manifest_key(ROUND, b)),
        ("s3:GetObject", layout.registry_key(b)),
        ("s3:GetObject", layout.update_weights_key(ROUND, a)),  # write-only, even its own
        ("s3:PutObject", layout.global_weights_key(ROUND)),
        ("s3:PutObject", layout.global_manifest_key(ROUND)),
        ("s3:PutObject", layout.registry_key(a)),
        ("s3:GetObject", layout.state_key()),
        ("s3:PutObject", layout.state_key()),
        ("s3:GetObject", layout.result_key(ROUND)),
        ("s3:GetObject", layout.ledger_key(ROUND)),
        ("s3:PutObject", layout.ledger_key(ROUND)),
        ("s3:DeleteObject", layout.update_weights_key(ROUND, a)),
        ("s3:ListBucket", None),
        ("s3:GetObject", f"federations/other-federation/rounds/{ROUND:06d}/global.safetensors"),
    ]
    for action, key in refused:
        verdict = decide(policies["bucket"], s3_request(arn_a, a, action, bucket, key))
        assert verdict != "allow", (action, key)


def test_updates_are_write_once_for_hospitals(
    policies: dict[str, Any], layout: ExchangeLayout, sites: dict[str, str]
) -> None:
    a, arn_a = next(iter(sites.items()))
    request = s3_request(
        arn_a,
        a,
        "s3:PutObject",
        policies["name"],
        layout.update_weights_key(ROUND, a),
        if_none_match=False,
    )
    assert decide(policies["bucket"], request) == "deny"


def test_a_forged_site_tag_or_a_look_alike_role_gets_nothing(
    policies: dict[str, Any], layout: ExchangeLayout, sites: dict[str, str], federation: Federation
) -> None:
    (a, arn_a), (b, _) = list(sites.items())
    bucket = policies["name"]
    key_b = layout.update_weights_key(ROUND, b)
    # Hospital A's admin tags A's own role (or session) as site B.
    forged = s3_request(arn_a, b, "s3:PutObject", bucket, key_b)
    assert decide(policies["bucket"], forged) != "allow"
    # ...or creates a role with B's name in A's account.
    account_a = arn_a.split(":")[4]
    look_alike = arn_a.replace(f"-{a}", f"-{b}")
    assert look_alike.split(":")[4] == account_a
    assert (
        decide(policies["bucket"], s3_request(look_alike, b, "s3:PutObject", bucket, key_b))
        != "allow"
    )
    # A role of an unlisted account with a perfect name and tag.
    stranger = arn_a.replace(account_a, "999999999999")
    request = s3_request(stranger, a, "s3:GetObject", bucket, layout.global_weights_key(ROUND))
    assert decide(policies["bucket"], request) != "allow"


def test_plain_http_is_refused(
    policies: dict[str, Any], layout: ExchangeLayout, sites: dict[str, str]
) -> None:
    a, arn_a = next(iter(sites.items()))
    request = s3_request(
        arn_a, a, "s3:GetObject", policies["name"], layout.global_weights_key(ROUND)
    )
    request.keys["aws:SecureTransport"] = "false"
    assert decide(policies["bucket"], request) == "deny"


def test_the_coordinating_account_is_not_caught_by_the_hospital_denies(
    policies: dict[str, Any], layout: ExchangeLayout, federation: Federation
) -> None:
    arn = f"arn:aws:iam::{federation.context.coordinating_account}:role/aggregator"
    for action, key in [
        ("s3:PutObject", layout.state_key()),
        ("s3:GetObject", layout.update_weights_key(ROUND, "x")),
        ("s3:ListBucket", None),
    ]:
        assert (
            decide(policies["bucket"], s3_request(arn, None, action, policies["name"], key))
            == "none"
        )


def kms_request(
    arn: str, site_tag: str, action: str, bucket: str, key: str, *, via_s3: bool = True
) -> Request:
    keys = {
        f"aws:PrincipalTag/{SITE_TAG_KEY}": site_tag,
        "kms:EncryptionContext:aws:s3:arn": f"arn:aws:s3:::{bucket}/{key}",
    }
    if via_s3:
        keys["kms:ViaService"] = "s3.eu-west-1.amazonaws.com"
    return Request(arn, action, "*", keys)


def test_key_policy_follows_the_same_rule(
    policies: dict[str, Any], layout: ExchangeLayout, sites: dict[str, str]
) -> None:
    (a, arn_a), (b, _) = list(sites.items())
    bucket, key_policy = policies["name"], policies["key"]
    assert (
        decide(
            key_policy,
            kms_request(arn_a, a, "kms:Decrypt", bucket, layout.global_weights_key(ROUND)),
        )
        == "allow"
    )
    assert (
        decide(key_policy, kms_request(arn_a, a, "kms:Decrypt", bucket, layout.registry_key(a)))
        == "allow"
    )
    assert (
        decide(
            key_policy,
            kms_request(
                arn_a, a, "kms:GenerateDataKey", bucket, layout.update_weights_key(ROUND, a)
            ),
        )
        == "allow"
    )
    for action, key in [
        ("kms:Decrypt", layout.update_weights_key(ROUND, b)),
        ("kms:GenerateDataKey", layout.update_weights_key(ROUND, b)),
        ("kms:Decrypt", layout.registry_key(b)),
        ("kms:Decrypt", layout.state_key()),
    ]:
        assert decide(key_policy, kms_request(arn_a, a, action, bucket, key)) != "allow", (
            action,
            key,
        )
    direct = kms_request(
        arn_a, a, "kms:Decrypt", bucket, layout.global_weights_key(ROUND), via_s3=False
    )
    assert decide(key_policy, direct) != "allow"
    forged = kms_request(arn_a, b, "kms:Decrypt", bucket, layout.update_weights_key(ROUND, b))
    assert decide(key_policy, forged) != "allow"

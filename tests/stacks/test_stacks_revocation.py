"""``fedsilo offboard`` cuts a hospital off the exchange at once, and the next deploy agrees.

The federation of the repository's cdk.json gains site-c (alone in account 444444444444) and
site-d (in site-a's account). Both are offboarded against moto (in-process ``mock_aws``): the
live bucket and key policies are those the coordinating stack rendered while both were still
listed, and ``offboard`` rewrites them (read-modify-write) and records both under
``revoked_hospitals``. The coordinating stack is then synthesised from the resulting cdk.json.

What moto does and does not do here: it stores and returns bucket and key policies, so the
read-modify-write, the idempotence and the equality with the synthesised statements (no drift
at the next deploy) are proven on it. It does not enforce them: moto evaluates bucket-policy
statements without the request's context (a conditional statement counts against every caller,
so it could not tell site-c from site-a, and would refuse this test's own registry writes: the
registry is kept in a second bucket here) and ignores key policies. Their effect is evaluated by
``@cloud-copilot/iam-simulate`` instead, on the live policies as moto returns them and on the
synthesised ones: the revoked roles, and every principal of an account with no hospital left,
are explicitly denied every read, write and key use, whatever their own identity policies say;
the remaining hospitals keep exactly their rights.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from iamsim import (
    ALLOW_EVERYTHING,
    Caller,
    ExchangePolicies,
    exchange_policies,
    kms_simulation,
    s3_simulation,
    simulate,
)
from moto import mock_aws
from stackhelpers import REPO, synthesise_aggregator

from fedsilo.ops.onboarding import CdkJson, offboard
from fedsilo.ops.revocation import REVOCATION_SIDS, CoordinatingAccount, exchange_key_alias
from fedsilo.testing.moto_s3 import REGION, create_bucket
from fl_core.exchange.layout import ExchangeLayout
from fl_core.exchange.manifests import Registration
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.s3_store import S3Store
from stacks import context as stack_context
from stacks.context import CONTEXT_KEY, parse_context

ROUND = 4
ALONE = {"site_id": "site-c", "account_id": "444444444444"}
SHARED = {"site_id": "site-d", "account_id": "222222222222"}  # site-a's account


@dataclass(frozen=True)
class Offboarded:
    """What the module's one offboarding left: cdk.json, live and synthesised policies."""

    raw_context: dict[str, Any]
    before: ExchangePolicies
    live: ExchangePolicies
    live_again: ExchangePolicies
    after: ExchangePolicies


def cdk_json_with(tmp: Path, hospitals: list[dict[str, str]]) -> Path:
    document = json.loads((REPO / "cdk.json").read_text())
    document["context"][CONTEXT_KEY]["hospitals"] += hospitals
    path = tmp / "cdk.json"
    path.write_text(json.dumps(document, indent=2))
    return path


def live_policies(
    template: ExchangePolicies, s3: Any, kms: Any, key_id: str, key_arn: str
) -> ExchangePolicies:
    return ExchangePolicies(
        bucket_name=template.bucket_name,
        bucket_policy=json.loads(s3.get_bucket_policy(Bucket=template.bucket_name)["Policy"]),
        key_arn=key_arn,
        key_policy=json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]),
    )


@pytest.fixture(scope="module")
def offboarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Offboarded]:
    tmp = tmp_path_factory.mktemp("offboard")
    path = cdk_json_with(tmp, [ALONE, SHARED])
    raw_before = json.loads(path.read_text())["context"][CONTEXT_KEY]
    before = exchange_policies(
        synthesise_aggregator(raw_before, tmp / "before"), with_identity=False
    )
    with pytest.MonkeyPatch.context() as env, mock_aws():
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.setenv(name, "testing")
        env.setenv("MOTO_ACCOUNT_ID", raw_before["coordinating_account"])
        s3 = boto3.client("s3", region_name=REGION)
        kms = boto3.client("kms", region_name=REGION)
        create_bucket(s3, before.bucket_name)
        s3.put_bucket_policy(Bucket=before.bucket_name, Policy=json.dumps(before.bucket_policy))
        key = kms.create_key(Policy=json.dumps(before.key_policy))["KeyMetadata"]
        kms.create_alias(
            AliasName=exchange_key_alias(raw_before["federation_id"]), TargetKeyId=key["KeyId"]
        )
        # moto would hold the exchange policy's conditional statements against this test's own
        # writes too, so the registry lives in a bucket of its own here
        registry = create_bucket(s3, "fedsilo-registry-under-test")
        exchange = Exchange(S3Store(registry, client=s3), raw_before["federation_id"])
        for site in (ALONE, SHARED):
            registration = Registration(
                site_id=site["site_id"],
                account_id=site["account_id"],
                joined_unix=1.0,
                status="active",
            )
            exchange.write_registration(registration, None)
        live_account = CoordinatingAccount(s3=s3, kms=kms)
        for site in (ALONE, SHARED):
            offboard(site["site_id"], CdkJson.load(path), exchange, 2.0, live_account)
        live = live_policies(before, s3, kms, key["KeyId"], key["Arn"])
        offboard(ALONE["site_id"], CdkJson.load(path), exchange, 3.0, live_account)
        live_again = live_policies(before, s3, kms, key["KeyId"], key["Arn"])
        assert exchange.read_registration(ALONE["site_id"]).status == "revoked"
    raw_after = json.loads(path.read_text())["context"][CONTEXT_KEY]
    after = exchange_policies(synthesise_aggregator(raw_after, tmp / "after"), with_identity=False)
    yield Offboarded(raw_after, before, live, live_again, after)


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def normal(value: Any) -> Any:
    """A statement with every one-element list as its element: CDK writes them so."""
    if isinstance(value, dict):
        return {key: normal(item) for key, item in value.items()}
    if isinstance(value, list):
        items = sorted((normal(item) for item in value), key=canonical)
        return items[0] if len(items) == 1 else items
    return value


def revocations(policy: dict[str, Any]) -> list[Any]:
    return sorted(
        (normal(s) for s in policy["Statement"] if s.get("Sid") in REVOCATION_SIDS),
        key=canonical,
    )


def others(policy: dict[str, Any]) -> list[Any]:
    return [normal(s) for s in policy["Statement"] if s.get("Sid") not in REVOCATION_SIDS]


def test_cdk_json_lists_the_revoked_sites_and_validates(offboarded: Offboarded) -> None:
    context = parse_context(offboarded.raw_context)
    assert [s.site_id for s in context.hospitals] == ["site-a", "site-b"]
    assert [s.model_dump() for s in context.revoked_hospitals] == [ALONE, SHARED]
    relisted = copy.deepcopy(offboarded.raw_context)
    relisted["hospitals"].append(ALONE)
    with pytest.raises(Exception, match="also in hospitals"):
        parse_context(relisted)


def test_the_live_deny_is_the_one_the_next_deploy_renders(offboarded: Offboarded) -> None:
    for live, synthesised in [
        (offboarded.live.bucket_policy, offboarded.after.bucket_policy),
        (offboarded.live.key_policy, offboarded.after.key_policy),
    ]:
        assert revocations(live) == revocations(synthesised)
        assert len(revocations(live)) == 2  # the roles, and the account left without a site
    live_bucket = revocations(offboarded.live.bucket_policy)
    [accounts] = [s for s in live_bucket if s["Sid"] == "RevokedHospitalAccounts"]
    assert accounts["Condition"] == {"StringEquals": {"aws:PrincipalAccount": "444444444444"}}


def test_offboarding_keeps_every_other_statement_and_is_idempotent(
    offboarded: Offboarded,
) -> None:
    assert others(offboarded.live.bucket_policy) == others(offboarded.before.bucket_policy)
    assert others(offboarded.live.key_policy) == others(offboarded.before.key_policy)
    assert offboarded.live_again.bucket_policy == offboarded.live.bucket_policy
    assert offboarded.live_again.key_policy == offboarded.live.key_policy


def test_the_key_alias_is_the_stacks_alias() -> None:
    assert exchange_key_alias("f-1") == stack_context.exchange_key_alias("f-1")


def requests_of(
    policies: ExchangePolicies, raw: dict[str, Any]
) -> list[tuple[str, dict[str, Any], bool]]:
    """(name, simulation, expected allowed) for revoked, shut-out and remaining callers."""
    fid, centre = raw["federation_id"], raw["coordinating_account"]
    layout = ExchangeLayout(fid)
    table: list[tuple[str, dict[str, Any], bool]] = []
    callers = [
        (Caller.hospital(fid, ALONE["site_id"], ALONE["account_id"]), False),
        (Caller.hospital(fid, SHARED["site_id"], SHARED["account_id"]), False),
        (Caller(f"arn:aws:iam::{ALONE['account_id']}:role/fedsilo/{fid}-site-a", "site-a"), False),
        (Caller.hospital(fid, "site-a", "222222222222"), True),
        (Caller.hospital(fid, "site-b", "333333333333"), True),
    ]
    for caller, allowed in callers:
        site = caller.site_tag or ""
        keys = [
            ("s3:PutObject", layout.update_weights_key(ROUND, site)),
            ("s3:PutObject", layout.preflight_key(site, "1a")),
            ("s3:GetObject", layout.global_weights_key(ROUND)),
            ("s3:GetObject", layout.ledger_key(ROUND)),
            ("s3:GetObject", layout.registry_key(site)),
        ]
        for action, key in keys:
            simulation = s3_simulation(
                policies, caller, action, key, identity=ALLOW_EVERYTHING, resource_account=centre
            )
            table.append((f"{caller.arn} {action} {key}", simulation, allowed))
            kms_action = "kms:GenerateDataKey" if action == "s3:PutObject" else "kms:Decrypt"
            simulation = kms_simulation(
                policies,
                caller,
                kms_action,
                key,
                identity=ALLOW_EVERYTHING,
                resource_account=centre,
                layout=layout,
                region=raw["region"],
            )
            table.append((f"{caller.arn} {kms_action} {key}", simulation, allowed))
    return table


@pytest.fixture(scope="module")
def verdicts(offboarded: Offboarded) -> dict[str, list[tuple[str, bool, str]]]:
    tables = {
        "live": requests_of(offboarded.live, offboarded.raw_context),
        "synthesised": requests_of(offboarded.after, offboarded.raw_context),
    }
    flat = [row for rows in tables.values() for row in rows]
    answers = iter(simulate([simulation for _, simulation, _ in flat]))
    return {
        which: [(name, allowed, next(answers)) for name, _, allowed in rows]
        for which, rows in tables.items()
    }


@pytest.mark.parametrize("which", ["live", "synthesised"])
def test_revoked_roles_and_an_emptied_account_are_denied_everything(
    verdicts: dict[str, list[tuple[str, bool, str]]], which: str
) -> None:
    revoked = [(name, answer) for name, allowed, answer in verdicts[which] if not allowed]
    assert len(revoked) == 30
    assert [row for row in revoked if row[1] != "ExplicitlyDenied"] == []


@pytest.mark.parametrize("which", ["live", "synthesised"])
def test_the_remaining_hospitals_are_unaffected(
    verdicts: dict[str, list[tuple[str, bool, str]]], which: str
) -> None:
    remaining = [(name, answer) for name, allowed, answer in verdicts[which] if allowed]
    assert len(remaining) == 20
    assert [row for row in remaining if row[1] != "Allowed"] == []

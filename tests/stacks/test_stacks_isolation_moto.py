"""Hospital isolation with IAM enforced by moto, using the policies of the synthesised templates.

Each hospital's task role is created in moto with the exact identity policy that its
HospitalStack template attaches (path, name and site-id tag as deployed), its credentials are
obtained with sts:AssumeRole, and only then is IAM enforcement switched on
(``POST /moto-api/reset-auth`` with ``0``).

What moto cannot enforce, and where it is proven instead:
* moto runs one account and ignores bucket policies for principals of other accounts, so this
  exercises the hospital side of the rule (identity policy) only; the exchange's bucket policy
  is evaluated on the template in ``test_stacks_exchange_policy.py``;
* moto does not evaluate KMS key policies (the exchange bucket here is not KMS-encrypted); the
  key policy is evaluated on the template in the same module;
* role trust policies (``aws:SourceAccount``) are asserted on the template in
  ``test_stacks_hospital.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
import requests
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer
from stackhelpers import Federation, resources_of

from fedsilo.testing.moto_s3 import REGION
from fl_core.exchange.layout import ExchangeLayout
from stacks.context import HOSPITAL_ROLE_PATH, SITE_TAG_KEY, hospital_role_name

ROUND = 3


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def identity_policy(federation: Federation, index: int, rendered: Any) -> dict[str, Any]:
    stack = federation.hospitals[index]
    template = federation.template_json(stack)
    [policy] = [
        r["Properties"]["PolicyDocument"]
        for r in resources_of(template, "AWS::IAM::ManagedPolicy").values()
        if "exchange rights" in r["Properties"]["Description"]
    ]
    account = federation.context.hospitals[index].account_id
    document: dict[str, Any] = rendered(policy, template, account=account, region=REGION)
    return document


def client(service: str, endpoint: str, credentials: dict[str, str] | None = None) -> BaseClient:
    keys = (
        {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        if credentials is None
        else {
            "aws_access_key_id": credentials["AccessKeyId"],
            "aws_secret_access_key": credentials["SecretAccessKey"],
            "aws_session_token": credentials["SessionToken"],
        }
    )
    return boto3.client(service, region_name=REGION, endpoint_url=endpoint, **keys)


@pytest.fixture(scope="module")
def hospital_clients(
    federation: Federation, moto_endpoint: str, rendered: Any
) -> Iterator[dict[str, BaseClient]]:
    """S3 clients acting as each of the first two hospitals' task roles, IAM enforced."""
    ctx = federation.context
    layout = ExchangeLayout(ctx.federation_id)
    admin_s3 = client("s3", moto_endpoint)
    admin_s3.create_bucket(
        Bucket=ctx.bucket_name, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    iam = client("iam", moto_endpoint)
    sts = client("sts", moto_endpoint)
    clients = {}
    for index, site in enumerate(ctx.hospitals[:2]):
        name = hospital_role_name(ctx.federation_id, site.site_id)
        role = iam.create_role(
            RoleName=name,
            Path=HOSPITAL_ROLE_PATH,
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"AWS": "*"}}
                    ],
                }
            ),
            Tags=[{"Key": SITE_TAG_KEY, "Value": site.site_id}],
        )["Role"]
        iam.put_role_policy(
            RoleName=name,
            PolicyName="ExchangeAccess",
            PolicyDocument=json.dumps(identity_policy(federation, index, rendered)),
        )
        credentials = sts.assume_role(RoleArn=role["Arn"], RoleSessionName=site.site_id)[
            "Credentials"
        ]
        clients[site.site_id] = client("s3", moto_endpoint, credentials)
        admin_s3.put_object(
            Bucket=ctx.bucket_name, Key=layout.registry_key(site.site_id), Body=b"{}"
        )
    first, second = ctx.hospitals[0].site_id, ctx.hospitals[1].site_id
    admin_s3.put_object(Bucket=ctx.bucket_name, Key=layout.global_weights_key(ROUND), Body=b"w")
    admin_s3.put_object(Bucket=ctx.bucket_name, Key=layout.global_manifest_key(ROUND), Body=b"{}")
    admin_s3.put_object(
        Bucket=ctx.bucket_name, Key=layout.update_weights_key(ROUND, second), Body=b"b"
    )
    admin_s3.put_object(Bucket=ctx.bucket_name, Key=layout.state_key(), Body=b"{}")
    admin_s3.put_object(Bucket=ctx.bucket_name, Key=layout.ledger_key(ROUND), Body=b"{}")
    assert first != second
    enforce_iam_after(moto_endpoint, 0).raise_for_status()
    yield clients
    enforce_iam_after(moto_endpoint, 1_000_000)  # i.e. not for the rest of the session


def enforce_iam_after(endpoint: str, requests_count: int) -> requests.Response:
    """Make moto enforce IAM once ``requests_count`` more requests have been served."""
    return requests.post(
        f"{endpoint}/moto-api/reset-auth",
        data=str(requests_count).encode(),
        headers={"Content-Type": "text/plain"},
        timeout=10,
    )


def denied(call: Any, **kwargs: Any) -> bool:
    try:
        call(**kwargs)
    except ClientError as err:
        return err.response["Error"]["Code"] in ("AccessDenied", "403")
    return False


@dataclass(frozen=True)
class Exchange:
    """The exchange as the tests see it: its bucket, its keys, and the first two site ids."""

    bucket: str
    layout: ExchangeLayout
    sites: tuple[str, str]


@pytest.fixture(scope="module")
def exchange(federation: Federation) -> Exchange:
    ctx = federation.context
    return Exchange(
        bucket=ctx.bucket_name,
        layout=ExchangeLayout(ctx.federation_id),
        sites=(ctx.hospitals[0].site_id, ctx.hospitals[1].site_id),
    )


def test_hospital_a_writes_its_update_and_reads_the_global_model(
    exchange: Exchange, hospital_clients: dict[str, BaseClient]
) -> None:
    bucket, layout, site_a = exchange.bucket, exchange.layout, exchange.sites[0]
    s3 = hospital_clients[site_a]
    assert s3.get_object(Bucket=bucket, Key=layout.global_weights_key(ROUND))["Body"].read() == b"w"
    assert (
        s3.get_object(Bucket=bucket, Key=layout.global_manifest_key(ROUND))["Body"].read() == b"{}"
    )
    assert s3.get_object(Bucket=bucket, Key=layout.registry_key(site_a))["Body"].read() == b"{}"
    assert s3.get_object(Bucket=bucket, Key=layout.ledger_key(ROUND))["Body"].read() == b"{}"
    for key in [
        layout.update_weights_key(ROUND, site_a),
        layout.update_manifest_key(ROUND, site_a),
        layout.secagg_update_key(ROUND, site_a, "advert"),
        layout.moments_key(site_a),
        layout.preflight_key(site_a, "1a"),
    ]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"{}")


def test_hospital_a_is_denied_hospital_b_and_everything_else(
    exchange: Exchange, hospital_clients: dict[str, BaseClient]
) -> None:
    bucket, layout = exchange.bucket, exchange.layout
    site_a, site_b = exchange.sites
    s3 = hospital_clients[site_a]
    reads = [
        layout.update_weights_key(ROUND, site_b),
        layout.update_manifest_key(ROUND, site_b),
        layout.registry_key(site_b),
        layout.state_key(),
        f"{layout.ledger_key(ROUND)}/x",
        f"{layout.global_manifest_key(ROUND)}/x",
    ]
    for key in reads:
        assert denied(s3.get_object, Bucket=bucket, Key=key), key
    writes = [
        layout.update_weights_key(ROUND, site_b),
        layout.update_manifest_key(ROUND, site_b),
        layout.global_weights_key(ROUND + 1),
        layout.registry_key(site_a),
        layout.registry_key(site_b),
        layout.state_key(),
        layout.ledger_key(ROUND),
    ]
    own = layout.update_manifest_key(ROUND, site_a)
    writes += [
        f"{own}/x",
        f"{layout.updates_prefix(ROUND)}{site_a}.x/{site_b}.json",
        f"{layout.updates_prefix(ROUND)}{site_a}.json/x/rounds/1/updates/{site_b}.x",
        f"{layout.updates_prefix(ROUND)}global.json",
        layout.preflight_key(site_b, "1a"),
        f"{layout.preflight_prefix()}{site_a}.preflight-1a/{site_b}.json",
        layout.moments_key(site_b),
    ]
    for key in writes:
        assert denied(s3.put_object, Bucket=bucket, Key=key, Body=b"x"), key
    assert denied(s3.list_objects_v2, Bucket=bucket)
    assert denied(s3.list_objects_v2, Bucket=bucket, Prefix=layout.updates_prefix(ROUND))
    assert denied(s3.delete_object, Bucket=bucket, Key=layout.update_weights_key(ROUND, site_a))


@pytest.mark.parametrize(("own", "other"), [(0, 1), (1, 0)], ids=["a-to-b", "b-to-a"])
def test_each_hospital_writes_its_own_update_not_the_others(
    own: int, other: int, exchange: Exchange, hospital_clients: dict[str, BaseClient]
) -> None:
    s3 = hospital_clients[exchange.sites[own]]
    own_manifest = exchange.layout.update_manifest_key(ROUND, exchange.sites[own])
    other_weights = exchange.layout.update_weights_key(ROUND, exchange.sites[other])
    s3.put_object(Bucket=exchange.bucket, Key=own_manifest, Body=b"{}")
    assert denied(s3.get_object, Bucket=exchange.bucket, Key=other_weights)
    assert denied(s3.put_object, Bucket=exchange.bucket, Key=other_weights, Body=b"x")

"""Joining and leaving, as docs/operations.md tells the two admins to do it.

In-process moto (``mock_aws``) proves the request / approve / offboard rules (STS's proof of
the account is tested in test_join_proof.py; here ``verified`` stands for its result); the preflight
runs through moto_server with IAM enforcement switched on, from inside a hospital role that
carries the identity policy the HospitalStack attaches (``stacks.policies``). moto keeps one
account and ignores bucket and KMS key policies for other accounts: those halves of the rule
are asserted on the synthesised templates in tests/stacks.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import boto3
import numpy as np
import pytest
from botocore.config import Config
from botocore.credentials import ReadOnlyCredentials
from moto import mock_aws

from fedsilo.engine.inline import InlineHospitals
from fedsilo.ops.aws_session import s3_store_for
from fedsilo.ops.onboarding import (
    CdkJson,
    VerifiedJoinRequest,
    approve,
    build_request,
    load_request,
    offboard,
    preflight,
    verify_ownership,
)
from fedsilo.testing.cli import run_fedsilo
from fedsilo.testing.moto_iam import (
    assume_role,
    create_role,
    enforce_iam,
    stop_enforcing_iam,
    trust_policy,
)
from fedsilo.testing.moto_s3 import (
    REGION,
    create_bucket,
    moto_client,
    reset_moto,
    threaded_moto_server,
)
from fedsilo.testing.sts_presigned import presigned_sts_front
from fl_client.hospital import Hospital
from fl_core.config import load_config
from fl_core.data.synthetic import SyntheticSource
from fl_core.errors import ConfigError
from fl_core.exchange.layout import ExchangeLayout
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.registry import activate_verified_sites
from fl_core.exchange.s3_store import S3Store
from fl_server.aggregator import FedAvgAggregator
from fl_server.round_loop import RoundLoop

REPO = Path(__file__).resolve().parents[3]
NEW_ACCOUNT = "444444444444"


@pytest.fixture
def cdk_json(tmp_path: Path) -> Path:
    """The repository's cdk.json: eicu-mortality with site-a (2222...) and site-b (3333...)."""
    path = tmp_path / "cdk.json"
    shutil.copy(REPO / "cdk.json", path)
    return path


@pytest.fixture
def aws(monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield monkeypatch


def as_account(monkeypatch, account: str) -> None:
    monkeypatch.setenv("MOTO_ACCOUNT_ID", account)


def exchange_for(cdk: CdkJson) -> Exchange:
    bucket = cdk.bucket_uri().removeprefix("s3://")
    s3 = boto3.client("s3", region_name=REGION)
    create_bucket(s3, bucket, exist_ok=True)
    return Exchange(S3Store(bucket, client=s3), cdk.federation_id)


def env_credentials() -> ReadOnlyCredentials:
    return boto3.Session().get_credentials().get_frozen_credentials()


def verified(path: Path) -> VerifiedJoinRequest:
    """What ``verify_ownership`` returns once STS confirmed the request's account."""
    request = load_request(path)
    return VerifiedJoinRequest(request=request, caller_arn=request.requested_by)


def signed_request(monkeypatch, tmp_path: Path, site: str, account: str) -> Path:
    as_account(monkeypatch, account)
    request = build_request(
        "eicu-mortality", site, account, REGION, boto3.client("sts"), env_credentials()
    )
    path = tmp_path / f"join-request-{site}.json"
    path.write_text(request.model_dump_json(indent=2))
    as_account(monkeypatch, "111111111111")
    return path


def test_request_checks_its_inputs_and_the_callers_account(aws, tmp_path):
    as_account(aws, NEW_ACCOUNT)
    sts = boto3.client("sts")
    creds = env_credentials()
    request = build_request("eicu-mortality", "site-c", NEW_ACCOUNT, REGION, sts, creds)
    assert (
        request.requested_by.startswith(f"arn:aws:sts::{NEW_ACCOUNT}")
        or NEW_ACCOUNT in request.requested_by
    )
    with pytest.raises(ConfigError, match=f"belong to account {NEW_ACCOUNT}, not 555555555555"):
        build_request("eicu-mortality", "site-c", "555555555555", REGION, sts, creds)
    with pytest.raises(ConfigError, match="site id"):
        build_request("eicu-mortality", "Site C", NEW_ACCOUNT, REGION, sts, creds)
    with pytest.raises(ConfigError, match="12-digit"):
        build_request("eicu-mortality", "site-c", "4444", REGION, sts, creds)
    with pytest.raises(ConfigError, match="not an AWS region"):
        build_request("eicu-mortality", "site-c", NEW_ACCOUNT, "mars-north-1", sts, creds)


def test_approve_registers_pending_and_adds_the_hospital_to_cdk_json(aws, tmp_path, cdk_json):
    path = signed_request(aws, tmp_path, "site-c", NEW_ACCOUNT)
    cdk = CdkJson.load(cdk_json)
    exchange = exchange_for(cdk)
    command = approve(verified(path), cdk, exchange, now=1000.0)
    assert command.startswith("npx cdk deploy FedsiloEicuMortalityHospitalSiteC")
    hospitals = json.loads(cdk_json.read_text())["context"]["fedsilo"]["hospitals"]
    assert {"site_id": "site-c", "account_id": NEW_ACCOUNT} in hospitals
    registration = exchange.read_registration("site-c")
    assert registration.status == "pending"
    assert registration.role_arn == f"arn:aws:iam::{NEW_ACCOUNT}:role/fedsilo/eicu-mortality-site-c"


@pytest.mark.parametrize(
    ("site", "account", "clash"),
    [
        ("site-a", NEW_ACCOUNT, "site id 'site-a' is already registered (account 222222222222)"),
        ("site-x", "222222222222", "account 222222222222 is already registered as site 'site-a'"),
        ("site-x", "111111111111", "coordinating account"),
    ],
)
def test_approve_refuses_collisions_naming_the_clash(aws, tmp_path, cdk_json, site, account, clash):
    path = signed_request(aws, tmp_path, site, account)
    cdk = CdkJson.load(cdk_json)
    before = cdk_json.read_text()
    with pytest.raises(ConfigError, match=clash.replace("(", r"\(").replace(")", r"\)")) as caught:
        approve(verified(path), cdk, exchange_for(cdk), now=1000.0)
    assert caught.value.exit_code == 2
    assert cdk_json.read_text() == before


@pytest.mark.parametrize("low_order", [bytes(32), (1).to_bytes(32, "little")], ids=["zero", "one"])
def test_approve_refuses_a_low_order_secagg_key(aws, tmp_path, cdk_json, low_order):
    as_account(aws, NEW_ACCOUNT)
    request = build_request(
        "eicu-mortality",
        "site-c",
        NEW_ACCOUNT,
        REGION,
        boto3.client("sts"),
        env_credentials(),
        secagg_public_key=low_order,
    )
    as_account(aws, "111111111111")
    path = tmp_path / "join-request-site-c.json"
    path.write_text(request.model_dump_json(indent=2))
    cdk = CdkJson.load(cdk_json)
    exchange = exchange_for(cdk)
    before = cdk_json.read_text()
    with pytest.raises(ConfigError, match="low-order X25519 point") as caught:
        approve(verified(path), cdk, exchange, now=1000.0)
    assert "`fedsilo onboard request` again" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert cdk_json.read_text() == before
    assert exchange.read_registration("site-c") is None


def test_a_request_edited_after_signing_is_refused(aws, tmp_path):
    path = signed_request(aws, tmp_path, "site-c", NEW_ACCOUNT)
    document = json.loads(path.read_text())
    document["account_id"] = "999999999999"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match="edited after it was signed"):
        load_request(path)


def test_check_with_the_wrong_accounts_credentials_fails_and_stays_pending(aws, tmp_path, cdk_json):
    path = signed_request(aws, tmp_path, "site-c", NEW_ACCOUNT)
    cdk = CdkJson.load(cdk_json)
    exchange = exchange_for(cdk)
    approve(verified(path), cdk, exchange, now=1000.0)
    as_account(aws, "555555555555")
    report, passed = preflight(exchange, "site-c", boto3.client("sts"), None, clock=lambda: 2000.0)
    assert not passed
    assert "account 555555555555" in report.checks[0].detail
    assert report.checks[0].fix
    as_account(aws, "111111111111")
    assert activate_verified_sites(exchange, now=3000.0) == []
    assert exchange.read_registration("site-c").status == "pending"


def test_offboarded_hospital_that_keeps_writing_is_refused(aws, tmp_path, cdk_json):
    cdk = CdkJson.load(cdk_json)
    exchange = exchange_for(cdk)
    path = signed_request(aws, tmp_path, "site-c", NEW_ACCOUNT)
    approve(verified(path), cdk, exchange, now=1000.0)
    revoked = offboard("site-c", CdkJson.load(cdk_json), exchange, now=2000.0)
    assert revoked.status == "revoked"
    sites = [
        h["site_id"] for h in json.loads(cdk_json.read_text())["context"]["fedsilo"]["hospitals"]
    ]
    assert "site-c" not in sites

    config = load_config(
        overrides={
            "federation_id": "eicu-mortality",
            "rounds": 1,
            "data.synthetic.hospitals": 3,
            "data.synthetic.mean_stays": 60,
            "round.min_sites": 2,
            "round.poll_interval_s": 0.01,
        }
    )
    source = SyntheticSource(3, 60, 0)
    ids = ["site-a", "site-b", "site-c"]
    from fedsilo.engine.app import DEFAULT_APP

    trainer = DEFAULT_APP.build_trainer(len(source.feature_names()), config)
    hospitals = [
        Hospital(data=dataclasses.replace(source.load_site(s), site_id=new), trainer=trainer)
        for s, new in zip(source.site_ids(), ids, strict=True)
    ]
    weights = trainer.get_weights()
    loop = RoundLoop(
        exchange,
        FedAvgAggregator(),
        config,
        ids,
        initial_weights={k: np.array(v) for k, v in weights.items()},
        # real hospitals answering each round, including the one that was offboarded
        events=InlineHospitals(exchange, config, lambda _round: hospitals),
    )
    loop.run()
    result = exchange.read_result(1)
    assert {d.site_id: d.reason for d in result.rejected} == {"site-c": "revoked_site"}
    assert sorted(d.site_id for d in result.accepted) == ["site-a", "site-b"]


@pytest.fixture
def moto_endpoint():
    with threaded_moto_server() as endpoint:
        # moto's backends are process-wide: start from an empty world, whatever ran before
        reset_moto(endpoint)
        yield endpoint
        stop_enforcing_iam(endpoint)
        reset_moto(endpoint)  # leave nothing for later tests


def test_preflight_from_inside_the_hospital_role_then_activation(
    monkeypatch, tmp_path, cdk_json, moto_endpoint
):
    """Happy path through moto_server: approve, the role as deployed, check, active."""
    from stacks.context import HOSPITAL_ROLE_PATH, SITE_TAG_KEY, hospital_role_name, parse_context
    from stacks.policies import hospital_identity_statements

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    moto_account = "123456789012"  # moto_server's account for these credentials
    admin = boto3.Session(region_name=REGION)
    path_style = Config(s3={"addressing_style": "path"})
    sts = admin.client("sts", endpoint_url=moto_endpoint)
    with presigned_sts_front(moto_endpoint) as sts_front:
        request = build_request(
            "eicu-mortality",
            "site-c",
            moto_account,
            REGION,
            admin.client("sts", endpoint_url=sts_front),
            admin.get_credentials().get_frozen_credentials(),
        )
        (tmp_path / "request.json").write_text(request.model_dump_json())
        cdk = CdkJson.load(cdk_json)
        ownership = verify_ownership(
            load_request(tmp_path / "request.json"), cdk.federation_id, sts_front, time.time()
        )

    coordinator = Exchange(
        s3_store_for(cdk.bucket_uri(), admin, moto_endpoint, None), cdk.federation_id
    )
    admin.client("s3", endpoint_url=moto_endpoint, config=path_style).create_bucket(
        Bucket=cdk.bucket_uri().removeprefix("s3://"),
        CreateBucketConfiguration={"LocationConstraint": REGION},
    )
    approve(ownership, cdk, coordinator, now=1000.0)

    # the hospital's task role exactly as HospitalStack makes it (name, path, tag, policy)
    context = parse_context(json.loads(cdk_json.read_text())["context"]["fedsilo"])
    [site] = [h for h in context.hospitals if h.site_id == "site-c"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [s.to_json() for s in hospital_identity_statements(context, site)],
    }
    role_arn = create_role(
        admin.client("iam", endpoint_url=moto_endpoint),
        hospital_role_name(context.federation_id, "site-c"),
        path=HOSPITAL_ROLE_PATH,
        trust=trust_policy({"AWS": f"arn:aws:iam::{moto_account}:root"}),
        tags={SITE_TAG_KEY: "site-c"},
        policy_name="exchange",
        policy=policy,
    )
    hospital = assume_role(sts, role_arn, "check").session()
    enforce_iam(moto_endpoint)

    as_hospital = Exchange(
        s3_store_for(cdk.bucket_uri(), hospital, moto_endpoint, None), cdk.federation_id
    )
    report, passed = preflight(
        as_hospital,
        "site-c",
        hospital.client("sts", endpoint_url=moto_endpoint),
        None,
        probe_site="site-a",
    )
    assert passed, [(c.name, c.detail) for c in report.checks]
    assert [c.ok for c in report.checks] == [True, True, True, True]
    assert "denied" in report.checks[2].detail

    # the coordinating account's own credentials: outside this hospital's rule
    stop_enforcing_iam(moto_endpoint)
    assert activate_verified_sites(coordinator, now=3000.0) == ["site-c"]
    assert coordinator.read_registration("site-c").status == "active"


@pytest.fixture
def sts_front(moto_endpoint):
    """moto_server answering presigned STS requests (``fedsilo.testing.sts_presigned``)."""
    with presigned_sts_front(moto_endpoint) as url:
        yield url


def test_readme_steps_through_the_command_line(tmp_path, cdk_json, moto_endpoint, sts_front):
    """The onboarding section of docs/operations.md, command by command, against moto_server."""
    import os
    import subprocess

    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }
    env.pop("AWS_PROFILE", None)
    cdk = CdkJson.load(cdk_json)
    bucket = cdk.bucket_uri().removeprefix("s3://")
    create_bucket(moto_client(moto_endpoint), bucket)

    def fedsilo(*args: str) -> subprocess.CompletedProcess[str]:
        return run_fedsilo(*args, cwd=tmp_path, env=env, timeout_s=120)

    readme = (REPO / "docs" / "operations.md").read_text()
    for command in (
        "fedsilo onboard request",
        "fedsilo onboard approve",
        "fedsilo onboard check",
        "fedsilo offboard",
    ):
        assert command in readme
    done = fedsilo(
        "onboard",
        "request",
        "--federation",
        "eicu-mortality",
        "--site-id",
        "site-c",
        "--account-id",
        "123456789012",
        "--region",
        REGION,
        "--endpoint-url",
        sts_front,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "join-request-site-c.json").is_file()
    # an account id edited in transit: one line, exit 2, nothing registered
    original = (tmp_path / "join-request-site-c.json").read_text()
    edited = json.loads(original)
    edited["account_id"] = "999999999999"
    (tmp_path / "join-request-edited.json").write_text(json.dumps(edited))
    on_moto = ("--cdk-json", str(cdk_json), "--endpoint-url", sts_front)
    refused = fedsilo("onboard", "approve", "join-request-edited.json", *on_moto)
    assert refused.returncode == 2
    assert [line for line in refused.stderr.splitlines() if line.strip()] == [
        line for line in refused.stderr.splitlines() if "edited after it was signed" in line
    ]
    approve_request = ("onboard", "approve", "join-request-site-c.json")
    damaged = ExchangeLayout("eicu-mortality").registry_key("site-z")  # shown, never fatal
    S3Store(bucket, client=moto_client(moto_endpoint)).put_new(damaged, b'{"site_id": ')
    done = fedsilo(*approve_request, *on_moto)
    assert done.returncode == 0, done.stderr
    assert f"skipped {damaged} (site site-z): malformed_registration" in done.stdout
    assert "npx cdk deploy FedsiloEicuMortalityHospitalSiteC" in done.stdout
    assert "confirmed by STS" in done.stdout
    bad_report = ExchangeLayout("eicu-mortality").preflight_key("site-c", "0")
    S3Store(bucket, client=moto_client(moto_endpoint)).put_new(bad_report, b"[]")
    checked = fedsilo(
        "onboard",
        "check",
        "--federation",
        "eicu-mortality",
        "--site-id",
        "site-c",
        "--exchange",
        f"s3://{bucket}",
        "--endpoint-url",
        moto_endpoint,
    )
    assert f"skipped {bad_report} (site site-c): malformed_preflight" in checked.stdout
    assert "Traceback" not in checked.stderr
    assert "no site policy" in checked.stdout
    policy = tmp_path / "site-policy.yaml"
    policy.write_text("site_id: site-c\nepsilon_budget: 5\nstudies: []\n")
    checked = fedsilo(
        "onboard", "check", "--federation", "eicu-mortality", "--site-id", "site-c",
        "--exchange", f"s3://{bucket}", "--endpoint-url", moto_endpoint,
        "--site-policy", str(policy),
    )  # fmt: skip
    assert "site policy of site-c: 0 studies approved" in checked.stdout
    assert "epsilon budget over all studies: 5" in checked.stdout
    assert "federation eicu-mortality is NOT among its studies" in checked.stdout
    as_json = fedsilo(
        "onboard", "check", "--federation", "eicu-mortality", "--site-id", "site-c",
        "--exchange", f"s3://{bucket}", "--endpoint-url", moto_endpoint, "--json",
    )  # fmt: skip
    document = json.loads(as_json.stdout)
    assert document["schema_id"] == "fedsilo.onboard-check/1"
    assert document["site_id"] == "site-c" and document["checks"]
    assert as_json.returncode == (0 if document["passed"] else 1)
    assert document["passed"] == all(check["ok"] for check in document["checks"])
    assert [row["reason"] for row in document["skipped"]] == ["malformed_preflight"]
    again = fedsilo(*approve_request, *on_moto)
    assert again.returncode == 2
    assert "site id 'site-c' is already registered" in again.stderr
    assert len([line for line in again.stderr.splitlines() if line.strip()]) == 1
    kms = moto_client(moto_endpoint, "kms")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/fedsilo/eicu-mortality/exchange", TargetKeyId=key_id)
    done = fedsilo("offboard", "--site-id", "site-c", *on_moto)
    assert done.returncode == 0, done.stderr
    assert "deny arn:aws:iam::123456789012:role/fedsilo/eicu-mortality-site-c" in done.stdout
    block = json.loads(cdk_json.read_text())["context"]["fedsilo"]
    assert "site-c" not in json.dumps(block["hospitals"])
    assert block["revoked_hospitals"] == [{"site_id": "site-c", "account_id": "123456789012"}]
    for policy in (
        moto_client(moto_endpoint).get_bucket_policy(Bucket=bucket)["Policy"],
        kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"],
    ):
        sids = [statement.get("Sid") for statement in json.loads(policy)["Statement"]]
        assert "RevokedHospitalAccounts" in sids  # site-c was alone in its account

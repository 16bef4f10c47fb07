"""A join request's account is proven by STS at approval, not by a digest anyone can redo.

Against moto_server behind ``PresignedStsFront`` (moto answers presigned STS requests only in
their header-signed form): moto maps each access key to the account that made it, as STS does,
but does not verify a presigned request's signature, so these tests cover what fedsilo checks
itself; the signature check is STS's (docs/operations.md).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.credentials import ReadOnlyCredentials

from fedsilo.ops.aws_session import s3_store_for
from fedsilo.ops.join_proof import BINDING_HEADER, sign_proof
from fedsilo.ops.onboarding import (
    CdkJson,
    JoinRequest,
    approve,
    build_request,
    load_request,
    request_digest,
    verify_ownership,
)
from fedsilo.testing.moto_iam import FAKE_CREDENTIALS, Credentials, create_user_key
from fedsilo.testing.moto_s3 import REGION, create_bucket, reset_moto, threaded_moto_server
from fedsilo.testing.sts_presigned import presigned_sts_front
from fl_core.errors import ConfigError
from fl_core.exchange.protocol import Exchange

REPO = Path(__file__).resolve().parents[3]
FEDERATION = "eicu-mortality"
ACCOUNT_A = "444444444444"
ACCOUNT_B = "555555555555"
DAY_S = 86_400


class World:
    """moto_server, its presigned-STS front, and an administrator in accounts A and B."""

    def __init__(self, moto: str, sts: str) -> None:
        self.moto, self.sts = moto, sts
        self.admin_a = create_user_key(moto, ACCOUNT_A, "admin-a")
        self.admin_b = create_user_key(moto, ACCOUNT_B, "admin-b")

    def request(
        self, admin: Credentials, account: str, site: str = "site-c", valid_s: int = 7 * DAY_S
    ) -> JoinRequest:
        """What ``fedsilo onboard request`` writes, made with ``admin``'s credentials."""
        return build_request(
            FEDERATION,
            site,
            account,
            REGION,
            admin.client(self.sts, "sts"),
            frozen(admin),
            valid_s=valid_s,
        )


def frozen(admin: Credentials) -> ReadOnlyCredentials:
    return ReadOnlyCredentials(admin.access_key_id, admin.secret_access_key, admin.session_token)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with threaded_moto_server() as moto, presigned_sts_front(moto) as sts:
        reset_moto(moto)  # moto's backends are process-wide: start from an empty world
        yield World(moto, sts)
        reset_moto(moto)


@pytest.fixture(autouse=True)
def accounts_by_access_key(monkeypatch):
    """moto picks the account from the access key only when nothing overrides it."""
    monkeypatch.delenv("MOTO_ACCOUNT_ID", raising=False)


def written(tmp_path: Path, request: JoinRequest | dict[str, object]) -> Path:
    path = tmp_path / "join-request.json"
    text = request if isinstance(request, dict) else json.loads(request.model_dump_json())
    path.write_text(json.dumps(text))
    return path


def test_own_accounts_credentials_are_approved_and_sts_names_the_signer(world, tmp_path):
    request = world.request(world.admin_a, ACCOUNT_A)
    verified = verify_ownership(
        load_request(written(tmp_path, request)), FEDERATION, world.sts, time.time()
    )
    assert verified.caller_arn == f"arn:aws:iam::{ACCOUNT_A}:user/admin-a"

    cdk_json = tmp_path / "cdk.json"
    shutil.copy(REPO / "cdk.json", cdk_json)
    cdk = CdkJson.load(cdk_json)
    create_bucket(FAKE_CREDENTIALS.client(world.moto), cdk.bucket_uri().removeprefix("s3://"))
    session = FAKE_CREDENTIALS.session()
    exchange = Exchange(s3_store_for(cdk.bucket_uri(), session, world.moto, None), FEDERATION)
    approve(verified, cdk, exchange, now=time.time())
    registration = exchange.read_registration("site-c")
    assert registration.account_id == ACCOUNT_A
    assert f"arn:aws:iam::{ACCOUNT_A}:user/admin-a" in registration.note


def test_an_edited_account_id_no_longer_hashes_to_the_signed_header(world, tmp_path):
    document = json.loads(world.request(world.admin_a, ACCOUNT_A).model_dump_json())
    document["account_id"] = ACCOUNT_B
    with pytest.raises(ConfigError, match=f"edited after it was signed.*{BINDING_HEADER}"):
        load_request(written(tmp_path, document))


def test_an_edit_with_the_header_recomputed_is_refused_by_the_account_sts_names(world, tmp_path):
    """Recomputing the header breaks the signature (STS refuses it); moto does not check that,
    and the account STS names is still the signer's."""
    document = json.loads(world.request(world.admin_a, ACCOUNT_A, site="site-d").model_dump_json())
    document["account_id"] = ACCOUNT_B
    fields = {k: v for k, v in document.items() if k != "proof" and v is not None}
    document["proof"]["headers"][BINDING_HEADER] = request_digest(fields)
    request = load_request(written(tmp_path, document))
    with pytest.raises(ConfigError, match=f"signed with credentials of account {ACCOUNT_A}"):
        verify_ownership(request, FEDERATION, world.sts, time.time())


def test_a_proof_made_with_another_accounts_credentials_is_refused(world, tmp_path):
    # account B's admin claims account A: `onboard request` refuses that, so sign by hand
    fields: dict[str, object] = {
        "federation_id": FEDERATION,
        "site_id": "site-c",
        "account_id": ACCOUNT_A,
        "region": REGION,
        "requested_by": f"arn:aws:iam::{ACCOUNT_A}:user/admin-a",
        "requested_unix": time.time(),
        "expires_unix": time.time() + DAY_S,
    }
    proof = sign_proof(request_digest(fields), frozen(world.admin_b), world.sts, REGION, DAY_S)
    request = load_request(written(tmp_path, JoinRequest(**fields, proof=proof)))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=f"claims account {ACCOUNT_A} but .* {ACCOUNT_B}"):
        verify_ownership(request, FEDERATION, world.sts, time.time())


@pytest.mark.parametrize(("valid_s", "later_s"), [(DAY_S, 2 * DAY_S), (7 * DAY_S, 8 * DAY_S)])
def test_an_expired_proof_is_refused(world, tmp_path, valid_s, later_s):
    request = load_request(
        written(tmp_path, world.request(world.admin_a, ACCOUNT_A, valid_s=valid_s))
    )
    verify_ownership(request, FEDERATION, world.sts, time.time())  # in time: accepted
    with pytest.raises(ConfigError, match=r"expired at .* run `fedsilo onboard request` again"):
        verify_ownership(request, FEDERATION, world.sts, time.time() + later_s)


def test_a_proof_for_another_federation_is_refused(world, tmp_path):
    request = load_request(written(tmp_path, world.request(world.admin_a, ACCOUNT_A)))
    with pytest.raises(
        ConfigError, match=r"for federation 'eicu-mortality', this cdk\.json is 'sepsis'"
    ):
        verify_ownership(request, "sepsis", world.sts, time.time())


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://evil.example.com/",
        "https://sts.eu-west-1.amazonaws.com.evil.example.com/",
        "https://sts.us-east-2.amazonaws.com/",  # an STS, but not the federation's region
        "http://sts.amazonaws.com/",
    ],
)
def test_a_proof_pointing_elsewhere_is_refused_before_anything_is_sent(world, tmp_path, endpoint):
    document = json.loads(world.request(world.admin_a, ACCOUNT_A).model_dump_json())
    query = document["proof"]["url"].split("?", 1)[1]
    document["proof"]["url"] = f"{endpoint}?{query}"
    request = load_request(written(tmp_path, document))
    with pytest.raises(ConfigError, match="not an STS endpoint of this federation"):
        verify_ownership(request, FEDERATION, world.sts, time.time())


def test_a_proof_that_is_not_get_caller_identity_is_refused(world, tmp_path):
    document = json.loads(world.request(world.admin_a, ACCOUNT_A).model_dump_json())
    document["proof"]["url"] = document["proof"]["url"].replace(
        "Action=GetCallerIdentity", "Action=AssumeRole"
    )
    request = load_request(written(tmp_path, document))
    with pytest.raises(ConfigError, match="not a signed GetCallerIdentity"):
        verify_ownership(request, FEDERATION, world.sts, time.time())


def test_the_real_aws_endpoints_are_the_only_ones_without_configuration(world):
    """Without an endpoint configured at the centre, only STS's own are allowed; the proof is
    then a presigned GET to the federation's regional STS."""
    from fedsilo.ops.join_proof import allowed_endpoints, signed_query

    assert allowed_endpoints(REGION, None) == {
        "https://sts.amazonaws.com/",
        f"https://sts.{REGION}.amazonaws.com/",
    }
    proof = sign_proof(
        "ab" * 32, frozen(world.admin_a), f"https://sts.{REGION}.amazonaws.com", REGION, DAY_S
    )
    endpoint, query = signed_query(proof, "ab" * 32, allowed_endpoints(REGION, None))
    assert endpoint == f"https://sts.{REGION}.amazonaws.com/"
    assert "X-Amz-SignedHeaders=host%3Bx-fedsilo-join-request" in query
    assert f"%2F{REGION}%2Fsts%2Faws4_request" in query

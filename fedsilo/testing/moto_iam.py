"""Users, roles and credentials in moto, and moto's IAM enforcement switch.

moto ignores IAM until ``POST /moto-api/reset-auth`` with ``0``: from then on every request
is checked against the caller's identity policies (bucket and KMS key policies of other
accounts are not evaluated: test those on the templates).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3

from fedsilo.testing.moto_s3 import FAKE_KEY, REGION, moto_client, post_moto_api

# ``reset-auth`` takes how many more requests may pass unchecked
_ENFORCE_NOW = b"0"
_ENFORCE_NEVER = b"1000000"
ALLOW_EVERYTHING: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}


@dataclass(frozen=True)
class Credentials:
    """An access key, with a session token when it came from STS."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    @classmethod
    def from_sts(cls, found: dict[str, Any]) -> Credentials:
        """From the ``Credentials`` of an ``sts:AssumeRole`` answer."""
        return cls(found["AccessKeyId"], found["SecretAccessKey"], found["SessionToken"])

    def session(self, region: str = REGION) -> boto3.Session:
        return boto3.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            aws_session_token=self.session_token,
            region_name=region,
        )

    def client(self, endpoint: str | None, service: str = "s3", **kwargs: Any) -> Any:
        """A boto3 client for moto signed with these credentials."""
        return moto_client(
            endpoint,
            service,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            session_token=self.session_token,
            **kwargs,
        )


FAKE_CREDENTIALS = Credentials(FAKE_KEY, FAKE_KEY)


def enforce_iam(endpoint: str) -> None:
    """From the next request on, moto_server checks every call against IAM."""
    post_moto_api(endpoint, "reset-auth", _ENFORCE_NOW)


def stop_enforcing_iam(endpoint: str) -> None:
    """moto_server lets calls through unchecked again (for the next million requests)."""
    post_moto_api(endpoint, "reset-auth", _ENFORCE_NEVER)


def create_user_key(
    endpoint: str,
    account_id: str,
    user: str,
    *,
    policy: dict[str, Any] | None = None,
    policy_name: str = "inline",
    exist_ok: bool = False,
) -> Credentials:
    """An IAM user with an access key in moto account ``account_id``.

    moto attributes every request signed with that key to the account, so a process holding
    it acts as that account, across the account boundary to another account's bucket.

    Parameters
    ----------
    policy
        An inline policy for the user (e.g. ``ALLOW_EVERYTHING`` for an administrator),
        named ``policy_name``.
    exist_ok
        Reuse a user of that name (a second key is made).
    """
    iam = moto_client(endpoint, "iam", account=account_id)
    try:
        iam.create_user(UserName=user)
    except iam.exceptions.EntityAlreadyExistsException:
        if not exist_ok:
            raise
    if policy is not None:
        iam.put_user_policy(
            UserName=user, PolicyName=policy_name, PolicyDocument=json.dumps(policy)
        )
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return Credentials(key["AccessKeyId"], key["SecretAccessKey"])


def trust_policy(principal: dict[str, str]) -> dict[str, Any]:
    """A role trust policy that lets ``principal`` (e.g. ``{"AWS": "*"}``) assume the role."""
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}],
    }


def create_role(
    iam: Any,
    name: str,
    *,
    path: str,
    trust: dict[str, Any],
    tags: dict[str, str],
    policy_name: str,
    policy: dict[str, Any],
) -> str:
    """A role with one inline policy, as a stack would make it; returns its ARN."""
    role = iam.create_role(
        RoleName=name,
        Path=path,
        AssumeRolePolicyDocument=json.dumps(trust),
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
    )["Role"]
    iam.put_role_policy(RoleName=name, PolicyName=policy_name, PolicyDocument=json.dumps(policy))
    return str(role["Arn"])


def assume_role(
    sts: Any, role_arn: str, session_name: str, duration_s: int | None = None
) -> Credentials:
    """The role's temporary credentials (what ECS hands a task whose role it is)."""
    kwargs: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": session_name}
    if duration_s is not None:
        kwargs["DurationSeconds"] = duration_s
    return Credentials.from_sts(sts.assume_role(**kwargs)["Credentials"])


@contextlib.contextmanager
def iam_enforced(endpoint: str) -> Iterator[None]:
    """IAM enforced inside the block; unchecked again after it, however it ends."""
    enforce_iam(endpoint)
    try:
        yield
    finally:
        stop_enforcing_iam(endpoint)

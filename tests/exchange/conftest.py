"""Fixtures for exchange stores: fake AWS credentials, moto's in-process mock, and moto_server.

``moto_server`` is a real HTTP server on 127.0.0.1 (a free port), so separate OS processes can
share one S3. Integration tests elsewhere can reuse it through ``create_bucket``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

REGION = "eu-west-1"
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}
# Anything that could make a test reach a real account or a developer's profile.
UNSET_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Fake credentials and no config files, so nothing can reach a real AWS account."""
    for name in UNSET_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in FAKE_ENV.items():
        monkeypatch.setenv(name, value)
    empty = tmp_path_factory.mktemp("aws") / "none"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def mocked_aws(aws_env: None) -> Iterator[None]:
    """moto's in-process mock of every AWS service, fresh for each test."""
    with mock_aws():
        yield


def server_client(endpoint_url: str, service: str = "s3") -> Any:
    """A plain boto3 client for moto_server (fake credentials must be in the environment)."""
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def create_bucket(client: Any, name: str | None = None) -> str:
    """Create a bucket in ``REGION`` (a fresh unique name unless given) and return its name."""
    bucket = name or f"fedsilo-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    return bucket


@pytest.fixture
def make_server_bucket(moto_server: str, aws_env: None) -> Callable[[], str]:
    """Creates a fresh bucket on moto_server each call and returns its name."""
    return lambda: create_bucket(server_client(moto_server))


@pytest.fixture
def server_bucket(make_server_bucket: Callable[[], str]) -> str:
    """A fresh bucket on moto_server."""
    return make_server_bucket()


@pytest.fixture
def mock_bucket(mocked_aws: None) -> str:
    """A fresh bucket in moto's in-process mock."""
    return create_bucket(boto3.client("s3", region_name=REGION))

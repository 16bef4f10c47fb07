"""Fixtures for exchange stores: fake AWS credentials, moto's in-process mock, and moto_server.

``moto_server`` (tests/conftest.py) is a real HTTP server on 127.0.0.1 (a free port), so
separate OS processes can share one S3; buckets on it come from ``fedsilo.testing.moto_s3``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from fedsilo.testing.moto_s3 import (
    FAKE_KEY,
    REAL_AWS_VARIABLES,
    REGION,
    create_bucket,
    moto_client,
    offline_settings,
)

FAKE_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SECURITY_TOKEN",
    "AWS_SESSION_TOKEN",
)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Fake credentials and no config files, so nothing can reach a real AWS account."""
    for name in REAL_AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name in FAKE_CREDENTIAL_VARIABLES:
        monkeypatch.setenv(name, FAKE_KEY)
    for name, value in offline_settings(tmp_path_factory.mktemp("aws")).items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def mocked_aws(aws_env: None) -> Iterator[None]:
    """moto's in-process mock of every AWS service, fresh for each test."""
    with mock_aws():
        yield


@pytest.fixture
def make_server_bucket(moto_server: str, aws_env: None) -> Callable[[], str]:
    """Creates a fresh bucket on moto_server each call and returns its name."""
    return lambda: create_bucket(moto_client(moto_server))


@pytest.fixture
def server_bucket(make_server_bucket: Callable[[], str]) -> str:
    """A fresh bucket on moto_server."""
    return make_server_bucket()


@pytest.fixture
def mock_bucket(mocked_aws: None) -> str:
    """A fresh bucket in moto's in-process mock."""
    return create_bucket(moto_client(None, region=REGION))


@pytest.fixture
def raw_s3(mocked_aws: None) -> Any:
    """A plain boto3 S3 client on moto's in-process mock, to write or read past the store."""
    return boto3.client("s3", region_name=REGION)

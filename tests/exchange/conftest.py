"""Fixtures for exchange stores: fake AWS credentials, moto's in-process mock, and moto_server.

``moto_server`` is a real HTTP server on 127.0.0.1 (a free port), so separate OS processes can
share one S3. Integration tests elsewhere can reuse it through ``create_bucket``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

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


class _OneRequestAtATime:
    """WSGI wrapper that serves one request at a time.

    moto checks ``If-None-Match`` / ``If-Match`` and then writes, with other request threads
    free to run in between; real S3 evaluates the condition atomically. Serialising requests
    gives moto_server S3's atomicity, so a race test measures our client, not moto's window.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self._lock:
            # Drain the body inside the lock: moto builds it lazily for some responses.
            return list(self._app(environ, start_response))


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto_server on 127.0.0.1 on a free port; yields its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    # ThreadedMotoServer exposes no hook for middleware; its werkzeug server reads ``.app``
    # for every request, so wrapping it before the first request is enough.
    wsgi_server = server._server
    assert wsgi_server is not None
    wsgi_server.app = _OneRequestAtATime(wsgi_server.app)
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


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

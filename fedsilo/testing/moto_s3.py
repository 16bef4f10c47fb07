"""moto_server on 127.0.0.1, the offline AWS environment, clients and buckets.

Two ways to run moto_server, both on a free port of 127.0.0.1:

* ``threaded_moto_server``: moto's ``ThreadedMotoServer`` inside this process (tests);
* ``start_moto_process`` / ``moto_process``: the ``moto_server`` executable next to this
  Python, as its own process, so its CPU is not the caller's (chaos, the AWS demo).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3

REGION = "eu-west-1"
FAKE_KEY = "testing"
# Anything that could make a process reach a real account or a developer's profile.
REAL_AWS_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
)


class MotoServerError(RuntimeError):
    """moto_server did not start or did not answer.

    A fault of the test harness, not an expected fault of fedsilo: it stays with the harness
    and is no ``FedsiloError``, so no entrypoint turns it into an exit code.
    """


def offline_settings(folder: Path) -> dict[str, str]:
    """The variables that point AWS SDKs at nothing: empty config files, no metadata service."""
    empty = folder / "no-aws-config"
    return {
        "AWS_CONFIG_FILE": str(empty),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_DEFAULT_REGION": REGION,
        "PYTHONUNBUFFERED": "1",
    }


def offline_env(
    folder: Path, environ: Mapping[str, str] | None = None, unset: Iterable[str] = ()
) -> dict[str, str]:
    """A process environment with no AWS credentials, profile or metadata service.

    Parameters
    ----------
    folder
        Where the (never created) empty config file is named.
    environ
        The environment to start from; ``os.environ`` when None.
    unset
        Further variables to drop (e.g. ``FEDSILO_*`` settings the caller passes explicitly).
    """
    dropped = {*REAL_AWS_VARIABLES, *unset}
    source = os.environ if environ is None else environ
    env = {k: v for k, v in source.items() if k not in dropped}
    env.update(offline_settings(folder))
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post_moto_api(endpoint: str, path: str, body: bytes = b"", timeout_s: float = 10.0) -> None:
    """POST to moto's control API (``/moto-api/...``); a non-2xx answer raises."""
    status = _request(endpoint, "POST", f"/moto-api/{path}", body, timeout_s)
    if not 200 <= status < 300:
        raise MotoServerError(f"POST {endpoint}/moto-api/{path} answered {status}")


def reset_moto(endpoint: str) -> None:
    """Empty every moto backend (they are process-wide: start from an empty world)."""
    post_moto_api(endpoint, "reset")


def answers(endpoint: str) -> bool:
    """True when moto_server at ``endpoint`` answers ``GET /moto-api/``."""
    try:
        return 200 <= _request(endpoint, "GET", "/moto-api/", b"", 2.0) < 400
    except OSError:
        return False


def _request(endpoint: str, method: str, path: str, body: bytes, timeout_s: float) -> int:
    parts = urlsplit(endpoint)
    connection = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout_s
    )
    try:
        headers = {"Content-Type": "text/plain"} if body else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return int(response.status)
    finally:
        connection.close()


@dataclass
class MotoProcess:
    """A ``moto_server`` process on 127.0.0.1 and its endpoint URL."""

    endpoint: str
    popen: subprocess.Popen[bytes]

    def ready(self) -> bool:
        return answers(self.endpoint)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Poll until moto_server answers; raises if it exited or ``timeout_s`` ran out."""
        give_up = time.monotonic() + timeout_s
        while not self.ready():
            if self.popen.poll() is not None or time.monotonic() > give_up:
                raise MotoServerError(f"moto_server did not start on {self.endpoint}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.popen.kill()
        self.popen.wait(timeout=30)


def start_moto_process(log: Path) -> MotoProcess:
    """Start ``moto_server`` (the one next to this Python) on a free port, output to ``log``.

    It runs in its own session, so a signal to the caller's group does not reach it; the
    caller stops it (``MotoProcess.stop``) and waits for it to answer first.
    """
    port = free_port()
    executable = Path(sys.executable).with_name("moto_server")
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            [str(executable), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return MotoProcess(f"http://127.0.0.1:{port}", popen)


@contextlib.contextmanager
def moto_process(log: Path, timeout_s: float = 60.0) -> Iterator[str]:
    """A ``moto_server`` process that answers; yields its endpoint URL, kills it at the end."""
    moto = start_moto_process(log)
    try:
        moto.wait_ready(timeout_s)
        yield moto.endpoint
    finally:
        moto.stop()


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


@contextlib.contextmanager
def threaded_moto_server(*, atomic: bool = False) -> Iterator[str]:
    """moto's ``ThreadedMotoServer`` on 127.0.0.1 (a free port); yields its endpoint URL.

    Parameters
    ----------
    atomic
        Serve one request at a time, so conditional writes are atomic as on S3.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        if atomic:
            # ThreadedMotoServer exposes no hook for middleware; its werkzeug server reads
            # ``.app`` for every request, so wrapping it before the first request is enough.
            wsgi_server = server._server
            if wsgi_server is None:
                raise MotoServerError("ThreadedMotoServer started without a server")
            wsgi_server.app = _OneRequestAtATime(wsgi_server.app)
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def moto_client(
    endpoint: str | None,
    service: str = "s3",
    *,
    access_key_id: str = FAKE_KEY,
    secret_access_key: str = FAKE_KEY,
    session_token: str | None = None,
    account: str | None = None,
    region: str = REGION,
    config: Any = None,
) -> Any:
    """A boto3 client for moto (``endpoint`` None: moto's in-process mock).

    ``account`` sends ``x-moto-account-id``, which routes the call to that moto account
    (before IAM is enforced; once it is, the key decides the account).
    """
    keys = {
        "aws_access_key_id": access_key_id,
        "aws_secret_access_key": secret_access_key,
        "aws_session_token": session_token,
    }
    made = boto3.client(service, endpoint_url=endpoint, region_name=region, config=config, **keys)
    if account is not None:

        def add_header(request: Any, **_: Any) -> None:
            request.headers["x-moto-account-id"] = account

        made.meta.events.register("before-sign.*.*", add_header)
    return made


def create_bucket(
    client: Any,
    name: str | None = None,
    *,
    prefix: str = "fedsilo-test",
    versioned: bool = False,
    exist_ok: bool = False,
) -> str:
    """Create a bucket in the client's region; returns its name.

    Parameters
    ----------
    name
        The bucket's name; a fresh ``{prefix}-<12 hex>`` when None.
    versioned
        Turn versioning on, as in production: every write shows up as a version to count.
    exist_ok
        Accept a bucket this account already owns.
    """
    bucket = name or f"{prefix}-{uuid.uuid4().hex[:12]}"
    region = client.meta.region_name
    try:
        client.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region}
        )
    except client.exceptions.BucketAlreadyOwnedByYou:
        if not exist_ok:
            raise
    if versioned:
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket

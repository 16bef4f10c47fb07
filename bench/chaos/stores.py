"""Where a scenario's exchange lives: a local folder, or a fresh bucket on moto_server.

moto_server runs as its own process on 127.0.0.1 (a free port), so the suite's processes
share one S3 as separate AWS clients would, and its CPU is not the controller's.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3

from bench.chaos.federation import REGION, ChaosError, Federation
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.s3_store import S3Store

PREFIX = "exchange"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def moto_server(folder: Path) -> Iterator[str]:
    """A moto_server process on 127.0.0.1; yields its endpoint URL."""
    port = free_port()
    log = open(folder / "moto.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        give_up = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > give_up:
                    raise ChaosError(f"moto_server did not start on {endpoint}") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.kill()
        proc.wait(timeout=30)
        log.close()


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def local_federation(folder: Path, **kwargs: Any) -> Federation:
    root = folder / "exchange"
    store = LocalDirectoryStore(root)
    return Federation(folder, root.resolve().as_uri(), store, **kwargs)


def s3_federation(folder: Path, endpoint: str, **kwargs: Any) -> Federation:
    """A federation in a fresh versioned bucket (every write is a version we can count)."""
    client = s3_client(endpoint)
    bucket = f"fedsilo-chaos-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    store = S3Store(bucket, PREFIX, client=client)
    return Federation(folder, f"s3://{bucket}/{PREFIX}", store, endpoint_url=endpoint, **kwargs)


def versions(federation: Federation, key: str) -> int:
    """How many versions of an exchange key the versioned bucket holds."""
    store = federation.store
    assert isinstance(store, S3Store)
    full = store.prefix + key
    listed = store.client.list_object_versions(Bucket=store.bucket, Prefix=full)
    return sum(1 for v in listed.get("Versions", []) if v["Key"] == full)

"""Where a scenario's exchange lives: a local folder, or a fresh bucket on moto_server.

moto_server runs as its own process on 127.0.0.1 (a free port), so the suite's processes
share one S3 as separate AWS clients would, and its CPU is not the controller's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chaos.federation import ChaosError, Federation
from fedsilo.testing.moto_s3 import MotoServerError, create_bucket, moto_client, moto_process
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.s3_store import S3Store

PREFIX = "exchange"


@contextlib.contextmanager
def moto_server(folder: Path) -> Iterator[str]:
    """A moto_server process on 127.0.0.1; yields its endpoint URL."""
    try:
        with moto_process(folder / "moto.log") as endpoint:
            yield endpoint
    except MotoServerError as err:
        raise ChaosError(str(err)) from None


def local_federation(folder: Path, **kwargs: Any) -> Federation:
    root = folder / "exchange"
    store = LocalDirectoryStore(root)
    return Federation(folder, root.resolve().as_uri(), store, **kwargs)


def s3_federation(folder: Path, endpoint: str, **kwargs: Any) -> Federation:
    """A federation in a fresh versioned bucket (every write is a version we can count)."""
    client = moto_client(endpoint)
    bucket = create_bucket(client, prefix="fedsilo-chaos", versioned=True)
    store = S3Store(bucket, PREFIX, client=client)
    return Federation(folder, f"s3://{bucket}/{PREFIX}", store, endpoint_url=endpoint, **kwargs)


def versions(federation: Federation, key: str) -> int:
    """How many versions of an exchange key the versioned bucket holds."""
    store = federation.store
    assert isinstance(store, S3Store)
    full = store.prefix + key
    listed = store.client.list_object_versions(Bucket=store.bucket, Prefix=full)
    return sum(1 for v in listed.get("Versions", []) if v["Key"] == full)

"""Fixtures shared by several test packages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fedsilo.testing.moto_s3 import threaded_moto_server


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto_server on 127.0.0.1 on a free port, one request at a time (conditional writes
    are atomic, as on S3); yields its endpoint URL."""
    with threaded_moto_server(atomic=True) as endpoint:
        yield endpoint

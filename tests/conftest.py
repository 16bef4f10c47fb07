"""Fixtures shared by several test packages."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from moto.server import ThreadedMotoServer


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

"""A threaded HTTP server on a free 127.0.0.1 port, for the proxies tests put in front of moto."""

from __future__ import annotations

import http.client
import http.server
import threading
from collections.abc import Callable
from typing import Any

RequestHandler = Callable[[Any], None]

# Headers of moto's answer that describe moto's own connection, not the answer relayed
_ANSWER_HEADERS_NOT_RELAYED = (
    "transfer-encoding",
    "connection",
    "content-length",
    "server",
    "date",
)


class LoopbackServer:
    """Passes every GET, PUT, POST, HEAD and DELETE to ``handle``, each on its own thread.

    ``handle`` gets the ``BaseHTTPRequestHandler`` of the request and answers through it.
    """

    def __init__(self, handle: RequestHandler) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def _handle(self) -> None:
                handle(self)

        for method in ("GET", "PUT", "POST", "HEAD", "DELETE"):
            setattr(Handler, f"do_{method}", Handler._handle)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def send_relayed_head(handler: Any, response: http.client.HTTPResponse, length: int) -> None:
    """Sends ``response``'s status and headers for a body of ``length`` bytes read in full."""
    handler.send_response(response.status, response.reason)
    for name, value in response.getheaders():
        if name.lower() not in _ANSWER_HEADERS_NOT_RELAYED:
            handler.send_header(name, value)
    handler.send_header("Content-Length", str(length))
    handler.end_headers()

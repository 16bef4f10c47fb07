"""A fault-injecting HTTP proxy in front of moto_server (S3's throttling and lost sockets)."""

from __future__ import annotations

import http.client
import threading
from typing import Any
from urllib.parse import urlsplit

from fedsilo.testing.loopback_http import LoopbackServer, send_relayed_head

SLOW_DOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>fedsilo-proxy</RequestId>"
    b"</Error>"
)
FAULT_KINDS = ("slow_down", "reset_before", "reset_after", "cut_body")


class FaultProxy:
    """Forwards HTTP requests to moto_server; every ``every``-th request is faulted, in turn:

    - ``slow_down``: answered 503 SlowDown (S3's throttling), never forwarded;
    - ``reset_before``: the socket is closed before forwarding (a dropped connection);
    - ``reset_after``: forwarded, then the socket closed with no reply (the write landed but
      its reply was lost, so the retry meets its own write);
    - ``cut_body``: forwarded, headers sent and half of the body, then closed (GETs only;
      other requests get ``reset_after``).

    At most ``max_faults`` faults are injected, so a run is slowed, not starved.
    """

    def __init__(self, target: str, every: int = 4, max_faults: int = 40) -> None:
        parts = urlsplit(target)
        self.target_host = parts.hostname or "127.0.0.1"
        self.target_port = parts.port or 80
        self.every = every
        self.max_faults = max_faults
        self.requests = 0
        self.injected: dict[str, int] = dict.fromkeys(FAULT_KINDS, 0)
        self._lock = threading.Lock()
        self.server = LoopbackServer(self.handle)
        self.url = self.server.url

    def _next_fault(self, method: str) -> str | None:
        with self._lock:
            self.requests += 1
            if self.requests % self.every or sum(self.injected.values()) >= self.max_faults:
                return None
            kind = FAULT_KINDS[(self.requests // self.every) % len(FAULT_KINDS)]
            if kind == "cut_body" and method != "GET":
                kind = "reset_after"
            self.injected[kind] += 1
            return kind

    def handle(self, handler: Any) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        fault = self._next_fault(handler.command)
        if fault == "slow_down":
            handler.send_response(503)
            handler.send_header("Content-Type", "application/xml")
            handler.send_header("Content-Length", str(len(SLOW_DOWN_BODY)))
            handler.end_headers()
            handler.wfile.write(SLOW_DOWN_BODY)
            return
        if fault == "reset_before":
            handler.close_connection = True
            handler.connection.shutdown(2)
            return
        upstream = http.client.HTTPConnection(self.target_host, self.target_port, timeout=60)
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "host"}
        headers["Host"] = f"{self.target_host}:{self.target_port}"
        upstream.request(handler.command, handler.path, body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        upstream.close()
        if fault == "reset_after":
            handler.close_connection = True
            handler.connection.shutdown(2)
            return
        send_relayed_head(handler, response, len(data))
        if handler.command == "HEAD":
            return
        if fault == "cut_body" and len(data) > 1:
            handler.wfile.write(data[: len(data) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(2)
            return
        handler.wfile.write(data)

    def close(self) -> None:
        self.server.close()

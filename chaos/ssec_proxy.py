"""S3's answer to a read of an SSE-C object without its key, in front of moto_server.

moto_server stores an object uploaded with a customer-provided key (SSE-C) and then serves it
to any reader; S3 refuses a GET or HEAD that does not carry the same key with 400
InvalidRequest. This proxy remembers the keys PUT with SSE-C headers through it and answers
later reads of them without those headers as S3 does; every other request is forwarded as is.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fedsilo.testing.fault_proxy import FaultProxy

SSEC_HEADER = "x-amz-server-side-encryption-customer-algorithm"
REFUSAL = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidRequest</Code>'
    b"<Message>The object was stored using a form of Server Side Encryption. The correct "
    b"parameters must be provided to retrieve the object.</Message>"
    b"<RequestId>fedsilo-ssec-proxy</RequestId></Error>"
)


class SseCProxy(FaultProxy):
    """No faults; reads of SSE-C objects without the customer key are refused (``refused``)."""

    def __init__(self, target: str) -> None:
        super().__init__(target, every=10**9, max_faults=0)
        self.sealed: set[str] = set()
        self.refused = 0

    def handle(self, handler: Any) -> None:
        path = urlsplit(handler.path).path
        keyed = handler.headers.get(SSEC_HEADER) is not None
        if handler.command == "PUT" and keyed:
            with self._lock:
                self.sealed.add(path)
        elif handler.command in ("GET", "HEAD") and path in self.sealed and not keyed:
            with self._lock:
                self.refused += 1
            body = b"" if handler.command == "HEAD" else REFUSAL
            handler.send_response(400, "Bad Request")
            handler.send_header("Content-Type", "application/xml")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        super().handle(handler)

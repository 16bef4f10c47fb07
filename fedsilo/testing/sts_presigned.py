"""An HTTP front for moto_server that answers presigned STS requests as AWS does.

moto_server routes a request by its ``Authorization`` header and maps the access key in it to
an account; a presigned (query-signed) request has no such header, so moto takes it for S3.
This front moves the query's SigV4 parameters into an ``Authorization`` header and the action
into a form body, then forwards to moto, which answers ``GetCallerIdentity`` for the account
of the access key, as STS does. Everything else passes through unchanged.

The translated request keeps the presigned signature, which no longer matches its new form:
moto checks signatures only while IAM is enforced, so proofs go through it before that, and
neither this front nor moto verifies a proof's signature or expiry (STS does). Tests of what
fedsilo checks itself use it; docs/operations.md says which are STS's.
"""

from __future__ import annotations

import contextlib
import http.client
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from fedsilo.testing.loopback_http import LoopbackServer, send_relayed_head

_HOP_HEADERS = ("transfer-encoding", "connection", "content-length")


def as_header_signed(path: str) -> tuple[str, bytes, dict[str, str]] | None:
    """``(path, body, headers)`` of the header-signed form of a presigned STS request."""
    parts = urlsplit(path)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    scope = params.get("X-Amz-Credential", "").split("/")
    if len(scope) != 5 or scope[3] != "sts":
        return None
    headers = {
        "Authorization": (
            f"{params.pop('X-Amz-Algorithm', '')} Credential={params.pop('X-Amz-Credential')}, "
            f"SignedHeaders={params.pop('X-Amz-SignedHeaders', '')}, "
            f"Signature={params.pop('X-Amz-Signature', '')}"
        ),
        "X-Amz-Date": params.pop("X-Amz-Date", ""),
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
    }
    params.pop("X-Amz-Expires", None)
    token = params.pop("X-Amz-Security-Token", None)
    if token is not None:
        headers["X-Amz-Security-Token"] = token
    return parts.path or "/", urlencode(params).encode(), headers


class PresignedStsFront:
    """Listens on 127.0.0.1 (a free port) and forwards to moto_server at ``target``."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.server = LoopbackServer(self.forward)
        self.url = self.server.url

    def forward(self, handler: Any) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        method, path = handler.command, handler.path
        body = handler.rfile.read(length) if length else b""
        # Host is kept: it is signed, and moto checks signatures once IAM is enforced
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_HEADERS}
        translated = as_header_signed(path) if method == "GET" else None
        if translated is not None:
            method = "POST"
            path, body, signed = translated
            headers = {k: v for k, v in headers.items() if not k.lower().startswith("x-amz")}
            headers.update(signed)
        upstream = http.client.HTTPConnection(*self.target, timeout=60)
        try:
            upstream.request(method, path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        send_relayed_head(handler, response, len(data))
        if handler.command != "HEAD":
            handler.wfile.write(data)

    def close(self) -> None:
        self.server.close()


@contextlib.contextmanager
def presigned_sts_front(target: str) -> Iterator[str]:
    """A ``PresignedStsFront`` for moto_server at ``target``; yields its URL."""
    front = PresignedStsFront(target)
    try:
        yield front.url
    finally:
        front.close()

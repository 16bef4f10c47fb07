"""S3's error replies, injected into a store's own botocore client.

A ``before-send`` handler that returns a response short-circuits the HTTP request, so the
server (moto_server or moto's in-process mock) never sees it: the client meets the fault
exactly as S3 would send it. Register ``Injector(fault, times)`` on a client's events.

moto stores an SSE-C or foreign-KMS object and serves it to anyone; ``refusal`` with
``SSE_C_MESSAGE`` or ``KMS_MESSAGE`` is what S3 answers instead.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

from botocore.awsrequest import AWSPreparedRequest, AWSResponse

Fault = Callable[[AWSPreparedRequest], AWSResponse]

SSE_C_MESSAGE = (
    "The object was stored using a form of Server Side Encryption. The correct parameters must "
    "be provided to retrieve the object."
)
KMS_MESSAGE = (
    "User: arn:aws:sts::111111111111:assumed-role/aggregator is not authorized to perform: "
    "kms:Decrypt on the resource associated with this ciphertext"
)


class RawBody(io.BytesIO):
    """The raw body botocore reads from an ``AWSResponse``."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.read()


def error_response(
    request: AWSPreparedRequest, status: int, code: str, message: str | None = None
) -> AWSResponse:
    """S3's XML error document; the message says it was injected unless one is given."""
    text = f"injected {code}" if message is None else message
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{code}</Code><Message>{text}</Message></Error>"
    ).encode()
    return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, RawBody(body))


def refusal(status: int, code: str, message: str) -> Fault:
    """S3 refusing a read: the error document, or the status alone for a HEAD."""

    def respond(request: AWSPreparedRequest) -> AWSResponse:
        if request.method == "HEAD":
            return AWSResponse(request.url, status, {}, RawBody(b""))
        return error_response(request, status, code, message)

    return respond


class Injector:
    """A ``before-send`` handler that fails the first ``times`` requests, then lets them pass."""

    def __init__(self, fault: Fault, times: int) -> None:
        self.fault = fault
        self.times = times
        self.calls = 0

    def __call__(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        self.calls += 1
        if self.calls <= self.times:
            return self.fault(request)
        return None

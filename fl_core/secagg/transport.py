"""Reading and writing the protocol documents in the exchange (keys from ``ExchangeLayout``).

Global documents are write-once: a resumed aggregator that writes the same bytes again is
fine, different bytes fail (``ObjectExistsError``), so every hospital sees one version.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from fl_core.errors import (
    AccessDeniedError,
    ExchangeError,
    ObjectExistsError,
    ObjectNotFoundError,
    UpdateRejectedError,
)
from fl_core.exchange.protocol import Exchange
from fl_core.hashing import sha256_hex
from fl_core.validation import first_error

_Doc = TypeVar("_Doc", bound=BaseModel)


def dump(document: BaseModel) -> bytes:
    return document.model_dump_json().encode()


def digest(document: BaseModel) -> str:
    """sha256 of the document's canonical bytes (what the next document names)."""
    return sha256_hex(dump(document))


def put_once(exchange: Exchange, key: str, document: BaseModel) -> BaseModel | None:
    """Write once; returns None, or the stored document's bytes differ (raise)."""
    data = dump(document)
    try:
        exchange.store.put_new(key, data)
    except ObjectExistsError:
        if sha256_hex(exchange.store.get(key)) != sha256_hex(data):
            raise
    return None


def read(exchange: Exchange, key: str, model: type[_Doc]) -> _Doc | None:
    """The document at ``key``, or None when it is not there yet (or not readable yet)."""
    try:
        data = exchange.store.get(key)
    except (ObjectNotFoundError, AccessDeniedError):
        return None
    try:
        return model.model_validate_json(data)
    except ValidationError as err:
        raise ExchangeError(f"{key} is malformed: {first_error(err)}") from err


def read_from_site(exchange: Exchange, key: str, model: type[_Doc], max_bytes: int) -> _Doc | None:
    """A hospital's document at ``key`` (advert, unmask answer), or None when not there yet.

    Hostile input: sized before it is read, and anything but a valid ``model`` of at most
    ``max_bytes`` raises ``UpdateRejectedError`` (``too_large``, ``malformed_secagg``).
    """
    try:
        size = exchange.store.size(key)
    except (ObjectNotFoundError, AccessDeniedError):
        return None
    if size > max_bytes:
        raise UpdateRejectedError("too_large", f"{key} is {size} bytes, limit {max_bytes}")
    try:
        data = exchange.store.get(key)
    except (ObjectNotFoundError, AccessDeniedError):
        return None
    return parse_from_site(data, model, max_bytes)


def parse_from_site(data: bytes, model: type[_Doc], max_bytes: int) -> _Doc:
    """``data`` as ``model``; raises ``UpdateRejectedError`` naming what is wrong with it."""
    if len(data) > max_bytes:
        raise UpdateRejectedError("too_large", f"document is {len(data)} bytes, limit {max_bytes}")
    try:
        return model.model_validate_json(data)
    except ValidationError as err:
        raise UpdateRejectedError(
            "malformed_secagg", f"{model.__name__}: {first_error(err)}"
        ) from err

"""Hypothesis strategies for what a hostile hospital writes, and the one assertion shared.

Each fuzz test feeds a parser arbitrary bytes and structured hostile documents (valid ones
with one value swapped for something wrong) and accepts only two outcomes: a valid parse or
the parser's named rejection.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from fl_core.errors import UpdateRejectedError

FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""Reproducible (derandomized) and quick: the whole folder runs in well under a minute."""

HUGE_INTS = st.sampled_from([2**31, 2**53 + 1, 2**63, 2**64, 2**70, 10**30, -(2**70)])
HOSTILE_NUMBERS: st.SearchStrategy[Any] = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    HUGE_INTS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 0.5, -0.0, 1e308, float("nan"), float("inf"), float("-inf")]),
)
HOSTILE_SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    HOSTILE_NUMBERS,
    st.text(max_size=20),
    st.sampled_from(["", "\ud800", "\udfff", "F32", "1e999", "NaN", "x" * 300]),
)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    HOSTILE_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

RAW_TOKENS = st.sampled_from(
    [b"1e999", b"-1e999", b"NaN", b"Infinity", b"-Infinity", b"9" * 5000, b"-0", b"1.5",
     b'"\\ud800"', b'"\\udfff\\ud800"', b"\xff\xfe", b"\xc3\x28", b"true", b"null", b"{}", b"[]"]
)  # fmt: skip
"""JSON text that ``json.dumps`` never writes: it reaches the parser as a hospital wrote it."""


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    """A JSON array nested ``depth`` deep: the recursion that killed ``json.loads``."""
    return b"[" * depth + leaf + b"]" * depth


def dumps(value: Any) -> bytes:
    """JSON with NaN/Infinity written as JavaScript does, lone surrogates escaped."""
    return json.dumps(value, allow_nan=True).encode()


def splice(document: bytes, token: bytes, at: int) -> bytes:
    """``document`` with its ``at``-th JSON value-position (after a ``:`` or ``[``/``,``)
    replaced by ``token``: a valid document made hostile where a number or string was."""
    positions = [i + 1 for i, byte in enumerate(document) if byte in b":[,"]
    if not positions:
        return token
    start = positions[at % len(positions)]
    end = start
    depth = 0
    in_string = False
    while end < len(document):  # the extent of the value that starts at ``start``
        byte = document[end]
        if in_string:
            if byte == ord("\\"):
                end += 1
            elif byte == ord('"'):
                in_string = False
        elif byte == ord('"'):
            in_string = True
        elif byte in b"[{":
            depth += 1
        elif byte in b"]}":
            if depth == 0:
                break
            depth -= 1
        elif byte == ord(",") and depth == 0:
            break
        end += 1
    return document[:start] + token + document[end:]


def hostile_documents(valid: bytes) -> st.SearchStrategy[bytes]:
    """What a hospital may write where ``valid`` (a JSON document) belongs: random bytes,
    arbitrary JSON, ``valid`` with one value made hostile, deep nesting, an extra field."""
    return st.one_of(
        st.binary(max_size=200),
        JSON_VALUES.map(dumps),
        st.tuples(st.integers(min_value=0), st.one_of(RAW_TOKENS, JSON_VALUES.map(dumps))).map(
            lambda spliced: splice(valid, spliced[1], spliced[0])
        ),
        st.integers(min_value=100, max_value=5000).map(nested),
        st.just(valid.rstrip()[:-1] + b', "extra": [1, 2]}'),
        st.just(valid),
    )


def safetensors_bytes(header: bytes, payload: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header + payload


@contextmanager
def only_named_rejections(reasons: frozenset[str]) -> Iterator[None]:
    """The parse may succeed or raise ``UpdateRejectedError`` with one of ``reasons``;
    anything else propagates and fails the test."""
    try:
        yield
    except UpdateRejectedError as rejected:
        assert rejected.reason in reasons, rejected
        assert rejected.detail, "a rejection says what was wrong"


def outcome(parse: Callable[[], Any], allowed: type[Exception]) -> Any:
    """``parse()``, or None where it raised ``allowed`` (the parser's documented error)."""
    try:
        return parse()
    except allowed:
        return None

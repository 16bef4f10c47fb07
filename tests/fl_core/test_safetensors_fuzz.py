"""The safetensors codec against hostile files: a valid parse or ``CodecError``, nothing else.

The regression tests at the end are hostile files on which an unbounded header parse raises
something other than ``CodecError`` (and so escapes admission as a traceback).
"""

from __future__ import annotations

import json
import struct
from functools import partial

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fl_core.errors import CodecError, HeaderError
from fl_core.serialisation import (
    _json_depth,
    decode_weights,
    encode_weights,
    header_span,
    read_header,
    read_metadata,
    view_weights,
)
from tests.hostile import (
    FUZZ,
    JSON_VALUES,
    RAW_TOKENS,
    dumps,
    nested,
    outcome,
    safetensors_bytes,
    splice,
)

WEIGHTS = {
    "b": np.arange(3, dtype=np.float32),
    "w": np.arange(6, dtype=np.float64).reshape(2, 3),
    "z": np.zeros((0, 4), np.int64),
}
VALID = encode_weights(WEIGHTS, {"fedsilo.manifest": '{"site_id": "site-a"}'})
VALID_HEADER = VALID[8 : 8 + struct.unpack("<Q", VALID[:8])[0]]
VALID_PAYLOAD = VALID[8 + len(VALID_HEADER) :]
DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8",
          "BOOL", "F8_E4M3", "f32", "float32", "", "C64"]  # fmt: skip


def parse_all(data: bytes) -> None:
    """Every reader of a file's bytes; each may only succeed or raise ``CodecError``.

    Where the header is accepted, the views must be makeable and agree with a full decode:
    what admission sums is what the file holds.
    """
    header = outcome(partial(read_header, data), CodecError)
    outcome(partial(read_metadata, data), CodecError)
    outcome(partial(header_span, data), CodecError)
    if header is None:
        with pytest.raises(CodecError):
            decode_weights(data)
        return
    if any(spec.dtype == "bfloat16" for spec in header.specs.values()):
        with pytest.raises(CodecError):
            view_weights(data, header)
        return
    views = view_weights(data, header)
    assert {name: view.shape for name, view in views.items()} == {
        name: spec.shape for name, spec in header.specs.items()
    }
    try:
        decoded = decode_weights(data)
    except CodecError:
        return  # safetensors may be stricter still; a refusal is a valid outcome
    assert decoded.keys() == views.keys()
    for name, view in views.items():
        np.testing.assert_array_equal(decoded[name], view)


@FUZZ
@given(st.binary(max_size=256))
def test_random_bytes(data: bytes) -> None:
    parse_all(data)


@FUZZ
@given(st.binary(max_size=200), st.binary(max_size=64))
def test_random_header_bytes_behind_a_plausible_length(header: bytes, payload: bytes) -> None:
    parse_all(safetensors_bytes(header, payload))


@FUZZ
@given(st.integers(min_value=0), st.one_of(RAW_TOKENS, JSON_VALUES.map(dumps)))
def test_valid_file_with_one_header_value_made_hostile(at: int, token: bytes) -> None:
    parse_all(safetensors_bytes(splice(VALID_HEADER, token, at), VALID_PAYLOAD))


@FUZZ
@given(st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=4), st.binary(max_size=48))
def test_arbitrary_header_objects(header: dict[str, object], payload: bytes) -> None:
    parse_all(safetensors_bytes(dumps(header), payload))


OFFSET = st.one_of(st.integers(min_value=-4, max_value=80), st.sampled_from([2**63, 2**70]))


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["a", "b", "c", "__metadata__"]),
        st.fixed_dictionaries(
            {
                "dtype": st.sampled_from(DTYPES),
                "shape": st.lists(
                    st.one_of(st.integers(min_value=-2, max_value=9), OFFSET), max_size=3
                ),
                "data_offsets": st.lists(OFFSET, min_size=1, max_size=3),
            }
        ),
        min_size=1,
        max_size=3,
    ),
    st.integers(min_value=0, max_value=80),
)
def test_shapes_and_offsets_in_and_out_of_range(entries: dict[str, object], size: int) -> None:
    """Overlapping, gapped, out-of-range, negative and oversized shapes and offsets."""
    parse_all(safetensors_bytes(dumps(entries), bytes(range(size))))


@FUZZ
@given(st.sampled_from(["b", "w", "__metadata__"]), st.integers(min_value=0, max_value=2))
def test_repeated_keys_are_refused(name: str, where: int) -> None:
    text = VALID_HEADER.decode().rstrip()
    repeat = f'"{name}": {json.dumps(json.loads(text)[name])}'
    hostile = [text[:-1] + ", " + repeat + "}", "{" + repeat + ", " + text[1:]][where % 2]
    with pytest.raises(HeaderError, match="same key twice"):
        read_header(safetensors_bytes(hostile.encode(), VALID_PAYLOAD))


@FUZZ
@given(
    st.dictionaries(
        st.one_of(st.text(max_size=5), st.just("\ud800")), JSON_VALUES, min_size=1, max_size=3
    )
)
def test_metadata_must_map_text_to_text(metadata: dict[str, object]) -> None:
    header = json.loads(VALID_HEADER)
    header["__metadata__"] = metadata
    data = safetensors_bytes(dumps(header), VALID_PAYLOAD)
    text_only = all(
        isinstance(v, str) and "\ud800" not in v + k and "\udfff" not in v
        for k, v in metadata.items()
    )
    if text_only:
        assert read_metadata(data) == metadata
    else:
        with pytest.raises(HeaderError):
            read_metadata(data)


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


BRACKETY_TEXT = st.text(alphabet='[]{}"\\ab', max_size=12)


@FUZZ
@given(
    st.recursive(
        st.one_of(BRACKETY_TEXT, st.integers()),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(BRACKETY_TEXT, inner, max_size=3)
        ),
        max_leaves=10,
    )
)
def test_depth_is_found_without_parsing(value: object) -> None:
    """Brackets, quotes and backslashes inside strings never count, however escaped."""
    assert _json_depth(json.dumps(value).encode()) == _depth(value)


# ---- the crashes, one regression test each ------------------------------------------------


def _entry(shape: str, offsets: str = "[0, 24]") -> bytes:
    return f'{{"w": {{"dtype": "F32", "shape": {shape}, "data_offsets": {offsets}}}}}'.encode()


def test_a_header_nested_5000_deep_is_refused_not_a_recursion_error() -> None:
    header = b'{"__metadata__": ' + nested(5000) + b', "w": ' + _entry("[6]")[6:]
    with pytest.raises(HeaderError, match="nests 5001 deep"):
        read_header(safetensors_bytes(header, bytes(24)))


def test_1e999_as_a_shape_is_refused_not_an_overflow_error() -> None:
    with pytest.raises(HeaderError, match="shape"):
        read_header(safetensors_bytes(_entry("[1e999]"), bytes(24)))


def test_2_pow_70_offsets_are_refused() -> None:
    with pytest.raises(HeaderError, match="data_offsets"):
        read_header(safetensors_bytes(_entry("[6]", f"[{2**70}, {2**70 + 24}]"), bytes(24)))


def test_2_pow_70_in_an_empty_shape_is_refused_not_a_value_error_from_numpy() -> None:
    data = safetensors_bytes(_entry(f"[{2**70}, 0]", "[0, 0]"), b"")
    with pytest.raises(HeaderError, match="shape"):
        view_weights(data)


def test_an_integer_of_5000_digits_is_refused_not_a_value_error() -> None:
    with pytest.raises(HeaderError, match="not JSON"):
        read_header(safetensors_bytes(_entry("[" + "9" * 5000 + "]"), bytes(24)))


def test_nan_and_infinity_are_not_numbers() -> None:
    for token in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(HeaderError, match="not a JSON number"):
            read_header(safetensors_bytes(_entry(f"[{token}]"), bytes(24)))


def test_an_honest_file_still_reads() -> None:
    header = read_header(VALID)
    assert header.metadata == {"fedsilo.manifest": '{"site_id": "site-a"}'}
    for name, view in view_weights(VALID, header).items():
        np.testing.assert_array_equal(view, WEIGHTS[name])


def test_a_header_is_utf8_not_any_encoding_json_loads_would_guess() -> None:
    for encoding in ("utf-16", "utf-32", "utf-8-sig"):
        header = _entry("[6]").decode().encode(encoding)
        with pytest.raises(HeaderError, match="not JSON"):
            read_header(safetensors_bytes(header, bytes(24)))

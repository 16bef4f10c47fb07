"""The tensor codec: model weights <-> safetensors bytes, and their sha256.

safetensors is the only format that crosses an account boundary: it holds plain tensors and
a JSON header, so reading an untrusted file can never execute code (``torch.load`` of a
pickle can). Everything else is refused with ``CodecError``.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import safetensors.numpy
from safetensors import SafetensorError

from fl_core.errors import CodecError, HeaderError
from fl_core.types import Weights

_HEADER_LEN_BYTES = 8
_MAX_HEADER_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class TensorSpec:
    """Name-independent description of one tensor: what admission compares."""

    dtype: str
    shape: tuple[int, ...]


def encode_weights(
    weights: Mapping[str, npt.NDArray[np.generic]], metadata: Mapping[str, str] | None = None
) -> bytes:
    """Serialise named arrays; keys are sorted by safetensors so the bytes are deterministic.

    ``metadata`` (strings only) lands in the signed bytes: an update names its site, round and
    nonce there, so its sha256 binds the tensors to who sent them and when.
    """
    if not weights:
        raise CodecError("refusing to encode an empty set of tensors")
    arrays = {name: np.ascontiguousarray(array) for name, array in weights.items()}
    return bytes(safetensors.numpy.save(arrays, metadata=dict(metadata) if metadata else None))


def decode_weights(data: bytes) -> Weights:
    """Parse safetensors bytes into numpy arrays; anything else raises ``CodecError``."""
    read_tensor_specs(data)  # header sanity first: a clear error before any large allocation
    try:
        return dict(safetensors.numpy.load(data))
    except (SafetensorError, ValueError, TypeError) as err:
        raise CodecError(f"not a valid safetensors file: {err}") from err


_DTYPE_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",  # secure aggregation's masked updates (ring elements)
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}


_ITEM_BYTES = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1,
    "uint64": 8, "uint32": 4, "uint16": 2, "uint8": 1, "bool": 1,
}  # fmt: skip
_MAX_HEADER_DEPTH = 8
"""A header nests three deep (object, tensor entry, shape list); deeper is hostile."""
_MAX_NDIM = 32
_MAX_DIM = 2**40
_MAX_OFFSET = 2**63
_ENTRY_FIELDS = frozenset({"dtype", "shape", "data_offsets"})
_DEPTH_CHUNK = 1 << 20
"""Brackets looked at a time by ``_json_depth``: its scratch stays small for a 16 MB header."""
_NOT_BRACKETS = bytes(code for code in range(256) if code not in b"[]{}")
_LOOPED_BRACKETS = 256
"""Up to this many brackets are counted in Python: numpy's set-up costs more on a few."""


def _json_depth(text: bytes) -> int:
    """How deep ``text``'s arrays and objects nest, found without recursion.

    ``json.loads`` recurses once a level: a header nested a few thousand deep raised
    ``RecursionError``. This bounds the depth before the parser sees the bytes, in linear
    time: escapes are blanked first (then every quote opens or closes a string), so what lies
    between the quotes at odd positions and the next is string and is dropped; the brackets
    left count. Unterminated strings run to the end. Every step is a bytes method: an
    update's header is mostly its manifest, one long string, and a scan byte by byte in numpy
    cost half of reading the header.
    """
    plain = text.replace(b"\\\\", b"__").replace(b'\\"', b"__")  # no escaped quote is left
    outside = b"".join(plain.split(b'"')[::2])  # the odd pieces are inside strings
    brackets = outside.translate(None, _NOT_BRACKETS)
    if len(brackets) <= _LOOPED_BRACKETS:
        deepest = level = 0
        for code in brackets:
            if code in b"[{":
                level += 1
                if level > deepest:
                    deepest = level
            else:
                level -= 1
        return deepest
    deepest = level = 0
    for start in range(0, len(brackets), _DEPTH_CHUNK):
        codes = np.frombuffer(brackets, np.uint8, min(_DEPTH_CHUNK, len(brackets) - start), start)
        steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
        levels = np.cumsum(steps, dtype=np.int64) + level
        deepest, level = max(deepest, int(levels.max())), int(levels[-1])
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise ValueError("an object names the same key twice")
    return found


def _is_text(value: object) -> bool:
    """A str that UTF-8 can encode (a JSON escape can spell a lone surrogate, which cannot)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _read_header(data: bytes) -> dict[str, Any]:
    if len(data) < _HEADER_LEN_BYTES:
        raise CodecError(f"file of {len(data)} bytes is too short to be safetensors")
    (header_len,) = struct.unpack("<Q", data[:_HEADER_LEN_BYTES])
    if header_len > _MAX_HEADER_BYTES or _HEADER_LEN_BYTES + header_len > len(data):
        raise CodecError("safetensors header length is larger than the file (truncated?)")
    text = data[_HEADER_LEN_BYTES : _HEADER_LEN_BYTES + header_len]
    depth = _json_depth(text)
    if depth > _MAX_HEADER_DEPTH:
        raise HeaderError(f"safetensors header nests {depth} deep, limit {_MAX_HEADER_DEPTH}")
    try:
        header = json.loads(  # decoded here: json.loads of bytes would take UTF-16 and -32 too
            text.decode(), object_pairs_hook=_unique_keys, parse_constant=_refuse_constant
        )
    except (ValueError, RecursionError) as err:
        # ValueError: not UTF-8, not JSON, a repeated key, NaN/Infinity, an integer of over
        # 4300 digits; RecursionError cannot happen below the depth limit, kept as a backstop
        raise HeaderError(f"safetensors header is not JSON: {str(err)[:200]}") from err
    if not isinstance(header, dict):
        raise HeaderError("safetensors header is not a JSON object")
    return header


@dataclass(frozen=True)
class SafetensorsHeader:
    """A safetensors header parsed and checked once: admission reads the specs, the metadata
    and then the views of thousands of updates, all from the one parse of the JSON."""

    specs: dict[str, TensorSpec]
    metadata: dict[str, str]
    offsets: dict[str, tuple[int, int]]
    data_start: int


def read_header(data: bytes) -> SafetensorsHeader:
    """Names, dtypes, shapes and metadata, without touching tensor data.

    Admission compares the specs with the global model before decoding anything, so a file
    that claims a 10 GB tensor is refused by its header. Every number must be a plain
    integer in range, every byte range must hold exactly its tensor, and the ranges must
    tile the data without gap or overlap (as safetensors itself demands): a header that
    passes describes views ``view_weights`` can always make. Raises ``HeaderError`` for a
    header that is not one, ``CodecError`` where the header and the file's size disagree.
    """
    header = _read_header(data)
    data_start = _HEADER_LEN_BYTES + int(struct.unpack("<Q", data[:_HEADER_LEN_BYTES])[0])
    payload = len(data) - data_start
    specs: dict[str, TensorSpec] = {}
    offsets: dict[str, tuple[int, int]] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        spec, (start, end) = _tensor_entry(name, entry)
        if not start <= end <= payload:
            raise CodecError(f"tensor {name!r} points outside the file (truncated?)")
        if end - start != math.prod(spec.shape) * _ITEM_BYTES[spec.dtype]:  # Python ints
            raise CodecError(f"tensor {name!r} byte range does not match its shape and dtype")
        specs[name] = spec
        offsets[name] = (start, end)
    if not specs:
        raise CodecError("safetensors file holds no tensors")
    _check_tiling(offsets, payload)
    return SafetensorsHeader(specs, _metadata(header), offsets, data_start)


def _tensor_entry(name: str, entry: object) -> tuple[TensorSpec, tuple[int, int]]:
    """One tensor's dtype, shape and byte range, each of the type and range it must have."""
    if not _is_text(name):
        raise HeaderError("a tensor name is not valid UTF-8 text")
    if not isinstance(entry, dict) or entry.keys() != _ENTRY_FIELDS:
        raise HeaderError(f"tensor {name!r} must have exactly the fields {sorted(_ENTRY_FIELDS)}")
    dtype, shape, span = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _DTYPE_NAMES:
        raise HeaderError(f"tensor {name!r} has dtype {str(dtype)[:20]!r}, not a plain type")
    if not isinstance(shape, list) or len(shape) > _MAX_NDIM:
        raise HeaderError(f"tensor {name!r} shape must be a list of at most {_MAX_NDIM} dims")
    if not _are_counts(shape, _MAX_DIM):
        raise HeaderError(f"tensor {name!r} shape must hold integers in 0..{_MAX_DIM}")
    if not (isinstance(span, list) and len(span) == 2 and _are_counts(span, _MAX_OFFSET)):
        raise HeaderError(f"tensor {name!r} data_offsets must be two integers in 0..2**63")
    return TensorSpec(dtype=_DTYPE_NAMES[dtype], shape=tuple(shape)), (span[0], span[1])


_INTEGER_ONLY = frozenset({int})


def _are_counts(values: list[object], bound: int) -> bool:
    """Every value a JSON integer in ``0..bound`` (``true`` is an int to Python, not to a
    header: its type is ``bool``). Checked with builtins over the whole list, not a call per
    value: thousands of answers a round each name a shape and a byte range per tensor."""
    if not _INTEGER_ONLY.issuperset(map(type, values)):
        return False
    counts: list[int] = values  # type: ignore[assignment]  # every one is an int
    return not counts or (min(counts) >= 0 and max(counts) <= bound)


def _check_tiling(offsets: Mapping[str, tuple[int, int]], payload: int) -> None:
    """The byte ranges, in order, must cover the data exactly once."""
    position = 0
    for name, (start, end) in sorted(offsets.items(), key=lambda item: item[1]):
        if start != position:
            what = "overlaps another tensor" if start < position else "leaves a gap before it"
            raise CodecError(f"tensor {name!r} {what}")
        position = end
    if position != payload:
        raise CodecError(f"{payload - position} bytes after the last tensor belong to no tensor")


def _metadata(header: dict[str, Any]) -> dict[str, str]:
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(
        _is_text(k) and _is_text(v) for k, v in metadata.items()
    ):
        raise HeaderError("safetensors __metadata__ must map strings to strings")
    return metadata


def header_span(head: bytes) -> int:
    """Bytes from the start of a safetensors file to the end of its header, from its first 8."""
    if len(head) < _HEADER_LEN_BYTES:
        raise CodecError(f"file of {len(head)} bytes is too short to be safetensors")
    (header_len,) = struct.unpack("<Q", head[:_HEADER_LEN_BYTES])
    if header_len > _MAX_HEADER_BYTES:
        raise CodecError(f"safetensors header of {header_len} bytes is over the limit")
    return _HEADER_LEN_BYTES + int(header_len)


def read_metadata(head: bytes) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors file (empty when there are none).

    Needs only the first ``header_span`` bytes: the tensor data need not be there, so a
    header can be read without downloading the file.
    """
    return _metadata(_read_header(head))


def read_tensor_specs(data: bytes) -> dict[str, TensorSpec]:
    """Names, dtypes and shapes from the safetensors header (see ``read_header``)."""
    return read_header(data).specs


def view_weights(data: bytes, header: SafetensorsHeader | None = None) -> Weights:
    """Read-only numpy views into safetensors bytes, without copying tensor data.

    The aggregator's hot path: an update is read once, hashed, checked and summed, and a copy
    per update would double its memory traffic. Every view is checked to lie inside the file
    and to hold exactly ``prod(shape)`` elements of its dtype before it is made. ``header``:
    the one ``read_header`` already returned for these bytes.
    """
    header = header or read_header(data)
    views: Weights = {}
    for name, spec in header.specs.items():
        if spec.dtype == "bfloat16":
            raise CodecError(f"tensor {name!r} is bfloat16, which numpy cannot read")
        start, end = header.offsets[name]
        dtype = np.dtype(spec.dtype).newbyteorder("<")
        count = math.prod(spec.shape)  # Python ints: no overflow, and no numpy call per tensor
        if end - start != count * dtype.itemsize:
            raise CodecError(f"tensor {name!r} byte range does not match its shape and dtype")
        flat = np.frombuffer(data, dtype=dtype, count=count, offset=header.data_start + start)
        views[name] = flat.reshape(spec.shape)
    return views


def specs_of(weights: Mapping[str, npt.NDArray[np.generic]]) -> dict[str, TensorSpec]:
    return {
        name: TensorSpec(dtype=str(array.dtype), shape=tuple(array.shape))
        for name, array in weights.items()
    }

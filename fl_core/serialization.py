"""The tensor codec: model weights <-> safetensors bytes, and their sha256.

safetensors is the only format that crosses an account boundary: it holds plain tensors and
a JSON header, so reading an untrusted file can never execute code (``torch.load`` of a
pickle can). Everything else is refused with ``CodecError``.
"""

from __future__ import annotations

import hashlib
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

from fl_core.errors import CodecError
from fl_core.types import Sha256Hex, Weights

_HEADER_LEN_BYTES = 8
_MAX_HEADER_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class TensorSpec:
    """Name-independent description of one tensor: what admission compares."""

    dtype: str
    shape: tuple[int, ...]


def sha256_hex(data: bytes) -> Sha256Hex:
    return hashlib.sha256(data).hexdigest()


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


def _read_header(data: bytes) -> dict[str, Any]:
    if len(data) < _HEADER_LEN_BYTES:
        raise CodecError(f"file of {len(data)} bytes is too short to be safetensors")
    (header_len,) = struct.unpack("<Q", data[:_HEADER_LEN_BYTES])
    if header_len > _MAX_HEADER_BYTES or _HEADER_LEN_BYTES + header_len > len(data):
        raise CodecError("safetensors header length is larger than the file (truncated?)")
    try:
        header = json.loads(data[_HEADER_LEN_BYTES : _HEADER_LEN_BYTES + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CodecError(f"safetensors header is not JSON: {err}") from err
    if not isinstance(header, dict):
        raise CodecError("safetensors header is not a JSON object")
    return header


@dataclass(frozen=True)
class SafetensorsHeader:
    """A safetensors header parsed and checked once: admission reads the specs, the metadata
    and then the views of thousands of updates, and each used to parse the JSON again."""

    specs: dict[str, TensorSpec]
    metadata: dict[str, str]
    offsets: dict[str, tuple[int, int]]
    data_start: int


def read_header(data: bytes) -> SafetensorsHeader:
    """Names, dtypes, shapes and metadata, without touching tensor data.

    Admission compares the specs with the global model before decoding anything, so a file
    that claims a 10 GB tensor is refused by its header.
    """
    header = _read_header(data)
    (header_len,) = struct.unpack("<Q", data[:_HEADER_LEN_BYTES])
    specs: dict[str, TensorSpec] = {}
    offsets: dict[str, tuple[int, int]] = {}
    payload = len(data) - _HEADER_LEN_BYTES - header_len
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPE_NAMES[entry["dtype"]]
            shape = tuple(int(dim) for dim in entry["shape"])
            start, end = (int(offset) for offset in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as err:
            raise CodecError(f"tensor {name!r} has a malformed header entry") from err
        if not 0 <= start <= end <= payload:
            raise CodecError(f"tensor {name!r} points outside the file (truncated?)")
        specs[name] = TensorSpec(dtype=dtype, shape=shape)
        offsets[name] = (start, end)
    if not specs:
        raise CodecError("safetensors file holds no tensors")
    return SafetensorsHeader(specs, _metadata(header), offsets, _HEADER_LEN_BYTES + header_len)


def _metadata(header: dict[str, Any]) -> dict[str, str]:
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise CodecError("safetensors __metadata__ must map strings to strings")
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

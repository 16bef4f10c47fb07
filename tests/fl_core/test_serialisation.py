import json
import pickle
import struct

import numpy as np
import pytest
import torch

from fl_core.errors import CodecError
from fl_core.hashing import sha256_hex
from fl_core.models import TabularMLP, load_model_weights, model_weights
from fl_core.serialisation import (
    TensorSpec,
    _json_depth,
    decode_weights,
    encode_weights,
    read_tensor_specs,
    view_weights,
)


def test_round_trip_is_exact_and_deterministic():
    weights = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.float64)}
    data = encode_weights(weights)
    assert data == encode_weights(dict(reversed(list(weights.items()))))
    back = decode_weights(data)
    assert back.keys() == weights.keys()
    for name in weights:
        np.testing.assert_array_equal(back[name], weights[name])
        assert back[name].dtype == weights[name].dtype
    assert read_tensor_specs(data) == {
        "a": TensorSpec("float32", (2, 3)),
        "b": TensorSpec("float64", (4,)),
    }
    assert len(sha256_hex(data)) == 64


def test_torch_model_round_trip():
    model = TabularMLP(5)
    weights = model_weights(model)
    other = TabularMLP(5)
    load_model_weights(other, decode_weights(encode_weights(weights)))
    for (name, a), (_, b) in zip(
        model.state_dict().items(), other.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps({"w": [1.0, 2.0]}),  # a pickle is never read
        b"",
        b"\x00" * 3,
        struct.pack("<Q", 10**9) + b"{}",  # header longer than the file
        struct.pack("<Q", 2) + b"[]",
        struct.pack("<Q", 9) + b"not json!",
    ],
)
def test_refuses_anything_but_safetensors(payload):
    with pytest.raises(CodecError):
        decode_weights(payload)


def test_truncated_file_is_refused():
    data = encode_weights({"w": np.ones(1000, np.float32)})
    with pytest.raises(CodecError):
        decode_weights(data[:-100])


def test_empty_weights_refused():
    with pytest.raises(CodecError):
        encode_weights({})


def test_views_equal_decoded_copies_and_check_ranges():
    weights = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(5, np.int64)}
    data = encode_weights(weights, {"fedsilo.site_id": "x"})
    views = view_weights(data)
    for name, value in weights.items():
        np.testing.assert_array_equal(views[name], value)
        assert views[name].dtype == value.dtype and not views[name].flags.writeable
    with pytest.raises(CodecError):
        view_weights(data[:-8])


def test_the_depth_of_a_header_with_many_brackets_counts_only_those_outside_strings():
    """Over 256 brackets the count runs in numpy; strings full of brackets still never count."""
    value = {
        "__metadata__": {"m": json.dumps([[{"a": "]]}}"}]] * 400)},
        **{f"t{i}": {"shape": [[i]] * 3, "n": '[{"'} for i in range(200)},
    }
    text = json.dumps(value).encode()
    assert text.count(b"[") + text.count(b"{") > 2000
    assert _json_depth(text) == 4
    assert _json_depth(b"[" * 300 + b'"]]]' + b"]" * 300) == 300  # unterminated string
    assert _json_depth(b"[" * 300 + b'"\\"]"' + b"]" * 300 + b"[" * 5) == 300

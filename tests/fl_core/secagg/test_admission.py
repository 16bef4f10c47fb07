"""Hostile input at the aggregator: masked updates outside the ring, malformed answers."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from fedsilo.testing.manifests import update_manifest
from fl_core.admission import AdmissionContext, check_update_file, update_metadata
from fl_core.errors import UpdateRejectedError
from fl_core.secagg.messages import SecAggUnmaskAnswer
from fl_core.serialisation import TensorSpec, encode_weights


def _context(bits: int) -> AdmissionContext:
    return AdmissionContext(
        federation_id="sa",
        round_index=1,
        task="train",
        global_sha256="0" * 64,
        invited_sites=frozenset({"site-a"}),
        tensor_specs={"w": TensorSpec("uint64", (4,))},
        max_update_bytes=1 << 20,
        max_manifest_bytes=1 << 20,
        max_num_examples=100,
        field_bits=bits,
    )


def _admit(values: np.ndarray, bits: int) -> None:
    manifest = update_manifest(
        federation_id="sa", round_index=1, global_sha256="0" * 64, num_examples=5, train_loss=None
    )
    data = encode_weights({"w": values}, update_metadata(manifest))
    check_update_file(data, "site-a", _context(bits))


def test_ring_elements_are_admitted_and_values_beyond_the_modulus_refused() -> None:
    _admit(np.array([0, 1, 2**40 - 1, 7], np.uint64), 40)
    _admit(np.array([2**64 - 1, 0, 0, 0], np.uint64), 64)
    with pytest.raises(UpdateRejectedError) as rejected:
        _admit(np.array([0, 2**40, 0, 0], np.uint64), 40)
    assert rejected.value.reason == "out_of_field"
    with pytest.raises(UpdateRejectedError) as rejected:  # plain floats are not ring elements
        _admit(np.zeros(4, np.float32), 40)
    assert rejected.value.reason == "wrong_dtype"


def test_an_answer_with_a_malformed_share_is_refused_by_its_schema() -> None:
    fields = {
        "federation_id": "sa",
        "site_id": "site-a",
        "round_index": 1,
        "request_sha256": "0" * 64,
        "mask_key_shares": {},
    }
    SecAggUnmaskAnswer(**fields, self_mask_shares={"site-b": "00" * 66})
    with pytest.raises(ValidationError):
        SecAggUnmaskAnswer(**fields, self_mask_shares={"site-b": "zz" * 66})
    with pytest.raises(ValidationError):
        SecAggUnmaskAnswer(**fields, self_mask_shares={"site-b": "00" * 65})
    with pytest.raises(ValidationError, match="both secrets"):
        SecAggUnmaskAnswer(
            **{**fields, "mask_key_shares": {"site-b": "00" * 66}},
            self_mask_shares={"site-b": "00" * 66},
        )


def test_one_wrong_share_among_more_than_t_does_not_spoil_the_secret() -> None:
    from fl_core.secagg import masking, shamir
    from fl_core.secagg.unmasking import reconstruct_checked

    seed = bytes(range(32))
    shares = shamir.split(shamir.secret_from_bytes(seed), 4, [1, 2, 3, 4, 5, 6])
    bad = [shamir.Share(shares[0].x, (shares[0].y + 1) % shamir.PRIME), *shares[1:5]]
    commitment = masking.seed_commitment(seed)
    assert reconstruct_checked(bad, 4, masking.seed_commitment, commitment) == seed
    assert reconstruct_checked(bad[:4], 4, masking.seed_commitment, commitment) is None

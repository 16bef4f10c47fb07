"""Hospitals' long-term keys: kept 0600 in the state folder, signed into the join request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from botocore.credentials import ReadOnlyCredentials

from fedsilo.engine.secagg_keys import hospital_public_key, key_path, load_key
from fedsilo.ops.join_proof import sign_proof
from fedsilo.ops.onboarding import JoinRequest, load_request, request_digest
from fl_core.errors import ConfigError
from fl_core.secagg import masking


def test_key_file_is_private_stable_and_refused_when_readable(tmp_path: Path) -> None:
    path = key_path(tmp_path / "state", "site-c")
    public = hospital_public_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert hospital_public_key(path) == public  # reused, never replaced
    assert masking.public_bytes(masking.load_private(load_key(path))) == public
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_key(path)
    with pytest.raises(ConfigError, match="onboard request"):
        load_key(tmp_path / "nowhere.secagg-key")


def test_the_public_key_is_signed_into_the_join_request(tmp_path: Path) -> None:
    public = hospital_public_key(key_path(tmp_path, "site-c"))
    fields = {
        "federation_id": "eicu-mortality",
        "site_id": "site-c",
        "account_id": "444444444444",
        "region": "eu-west-1",
        "requested_by": "arn:aws:iam::444444444444:user/admin",
        "requested_unix": 1.0,
        "expires_unix": 2.0,
        "secagg_public_key": public.hex(),
    }
    # presigned offline, as `onboard request` does with the admin's credentials
    credentials = ReadOnlyCredentials("AKIDEXAMPLE", "example-secret", None)
    endpoint = "https://sts.eu-west-1.amazonaws.com"
    proof = sign_proof(request_digest(fields), credentials, endpoint, "eu-west-1", 86_400)
    request = JoinRequest(**fields, proof=proof)
    path = tmp_path / "join-request-site-c.json"
    path.write_text(request.model_dump_json())
    assert load_request(path).secagg_public_key == public.hex()
    swapped = json.loads(path.read_text())
    swapped["secagg_public_key"] = masking.public_bytes(masking.new_private_key()).hex()
    path.write_text(json.dumps(swapped))
    with pytest.raises(ConfigError, match="edited after it was signed"):
        load_request(path)
    del swapped["secagg_public_key"]  # dropping the key is an edit too
    path.write_text(json.dumps(swapped))
    with pytest.raises(ConfigError, match="edited after it was signed"):
        load_request(path)


def test_protocol_keys_fall_under_the_hospital_grants() -> None:
    """Relayed documents are ``global.*`` (every hospital may read them); a hospital's own
    documents are under ``updates/{site}.*`` (only it may write them), and are never taken
    for an update."""
    from fnmatch import fnmatchcase

    from fl_core.exchange.layout import ExchangeLayout

    layout = ExchangeLayout("fed")
    reads = f"{layout.root}rounds/*/global.*"
    for document in ("roster", "setup", "unmask"):
        assert fnmatchcase(layout.secagg_global_key(3, document), reads)
    for document in ("advert", "answer"):
        key = layout.secagg_update_key(3, "site-a", document)
        assert fnmatchcase(key, f"{layout.root}rounds/*/updates/site-a.*")
        assert not fnmatchcase(key, f"{layout.root}rounds/*/updates/site-b.*")
        assert layout.site_of_update_key(key) is None
    with pytest.raises(ValueError, match="unknown secagg document"):
        layout.secagg_global_key(3, "shares")

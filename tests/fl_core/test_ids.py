"""The id checks every layer shares: what they accept is exactly what the exchange can key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fl_core.errors import ConfigError
from fl_core.exchange.layout import ExchangeLayout
from fl_core.ids import (
    check_account_id,
    check_federation_id,
    check_site_id,
    site_names,
)

VALID_ID = st.from_regex(r"[a-z0-9][a-z0-9-]{0,62}", fullmatch=True)


@given(VALID_ID, VALID_ID)
def test_every_valid_id_keys_the_exchange(federation_id: str, site_id: str) -> None:
    assert check_site_id(site_id) == site_id
    assert check_federation_id(federation_id) == federation_id
    key = ExchangeLayout(federation_id).update_weights_key(1, site_id)
    assert key == f"federations/{federation_id}/rounds/000001/updates/{site_id}.safetensors"


@pytest.mark.parametrize(
    "bad", ["", "-site", "Site-A", "site_a", "site/a", "site.a", "a" * 64, "site a", "sité"]
)
def test_ids_that_could_escape_a_prefix_are_refused_with_the_rule(bad: str) -> None:
    with pytest.raises(ConfigError, match="lower-case letters, digits or dashes"):
        check_site_id(bad)
    with pytest.raises(ConfigError, match="federation id"):
        check_federation_id(bad)
    with pytest.raises(ConfigError):
        ExchangeLayout("fed").registry_key(bad)


def test_account_ids_are_twelve_digits() -> None:
    assert check_account_id("123456789012") == "123456789012"
    for bad in ("12345678901", "1234567890123", "12345678901a", " 123456789012"):
        with pytest.raises(ConfigError, match="12-digit AWS account id"):
            check_account_id(bad)


def test_a_hospital_value_becomes_a_valid_site_id_and_its_folder() -> None:
    assert site_names("73") == ("site-73", "site_73")
    assert site_names("St. Mary's") == ("site-st-mary-s", "site_st-mary-s")
    long_id, _ = site_names("x" * 100)
    assert check_site_id(long_id) == long_id
    with pytest.raises(ConfigError, match="no letter or digit"):
        site_names("...")

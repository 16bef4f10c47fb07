"""Ids are ASCII only: digits and letters that look right in another script are refused."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field, ValidationError

from fl_core.errors import ConfigError
from fl_core.ids import ACCOUNT_ID_REGEX, check_account_id, check_federation_id, check_site_id

ACCOUNT = "123456789012"


def in_script(zero: int, digits: str = ACCOUNT) -> str:
    """``digits`` written with the digits of the script whose zero is code point ``zero``."""
    return "".join(chr(zero + int(d)) for d in digits)


FULL_WIDTH = in_script(0xFF10)
ARABIC_INDIC = in_script(0x0660)
EXTENDED_ARABIC_INDIC = in_script(0x06F0)
DEVANAGARI = in_script(0x0966)


@pytest.mark.parametrize(
    "bad",
    [
        FULL_WIDTH,
        ARABIC_INDIC,
        EXTENDED_ARABIC_INDIC,
        DEVANAGARI,
        f"{ACCOUNT}\n",
        ACCOUNT[:-1] + in_script(0xFF10, "2"),
    ],
)
def test_account_ids_in_other_scripts_or_with_a_newline_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="12-digit AWS account id"):
        check_account_id(bad)


class _Onboarded(BaseModel):
    account_id: str = Field(pattern=ACCOUNT_ID_REGEX)


@pytest.mark.parametrize("bad", [FULL_WIDTH, ARABIC_INDIC, DEVANAGARI, f"{ACCOUNT}\n"])
def test_the_shared_pattern_refuses_them_in_pydantic_models_too(bad: str) -> None:
    assert _Onboarded(account_id=ACCOUNT).account_id == ACCOUNT
    with pytest.raises(ValidationError):
        _Onboarded(account_id=bad)


@pytest.mark.parametrize(
    "bad",
    [
        "site-a\n",
        "site-\u0430",  # Cyrillic a
        "\u0455ite-a",  # Cyrillic dze, looks like s
        "site-" + in_script(0xFF10, "1"),  # full-width one
        "site-" + in_script(0x0660, "1"),  # Arabic-Indic one
        "site-a\u200b",  # zero-width space
        "\u017fite-a",  # long s: lower-cases and case-folds towards ASCII
        "site-\u212a",  # Kelvin sign: matches [a-z] under re.IGNORECASE in Unicode mode
    ],
)
def test_site_and_federation_ids_are_ascii_only(bad: str) -> None:
    with pytest.raises(ConfigError, match="lower-case letters, digits or dashes"):
        check_site_id(bad)
    with pytest.raises(ConfigError, match="federation id"):
        check_federation_id(bad)

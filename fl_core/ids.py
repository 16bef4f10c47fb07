"""Every id and name the federation trusts, checked in one place.

Site and federation ids become S3 key segments and IAM prefixes, so the exchange, the config,
the data preparers, onboarding and the CDK stacks must all accept exactly the same strings.
This module imports nothing from the rest of fedsilo (only the error type), so each of them
can use it without depending on the others: the exchange imports it, never the other way.
"""

from __future__ import annotations

import re

from fl_core.errors import ConfigError

ID_REGEX = r"[a-z0-9][a-z0-9-]{0,62}"
"""Site and federation ids: 1-63 lower-case letters, digits or dashes, not starting with a dash."""
SITE_ID_PATTERN = re.compile(ID_REGEX, re.ASCII)
FEDERATION_ID_PATTERN = re.compile(ID_REGEX, re.ASCII)
ACCOUNT_ID_REGEX = r"^[0-9]{12}$"
"""Twelve ASCII digits. Spelled ``[0-9]``, never ``\\d``: ``\\d`` also matches full-width and
Arabic-Indic digits in Python and in pydantic's patterns, which IAM and STS never accept, so
an id written in them would pass here and fail (or be read differently) further on."""
ACCOUNT_ID_PATTERN = re.compile(r"[0-9]{12}", re.ASCII)
_SITE_KEY_CHARS = re.compile(r"[^a-z0-9]+", re.ASCII)


def check_site_id(site_id: str) -> str:
    """Site ids become key segments and IAM prefixes: lower-case letters, digits and dashes."""
    return _check_id(site_id, SITE_ID_PATTERN, "site id")


def check_federation_id(federation_id: str) -> str:
    """Federation ids name the exchange's top folder and every stack: same rule as site ids."""
    return _check_id(federation_id, FEDERATION_ID_PATTERN, "federation id")


def _check_id(value: str, pattern: re.Pattern[str], what: str) -> str:
    # fullmatch, never match with ``$``: ``$`` also matches before a trailing newline
    if not pattern.fullmatch(value):
        raise ConfigError(
            f"{what} {value!r} is invalid; use 1-63 lower-case letters, digits or dashes, "
            "starting with a letter or digit"
        )
    return value


def check_account_id(account_id: str, flag: str = "--account-id") -> str:
    """An AWS account id is exactly twelve digits (the trust boundary of a hospital)."""
    if not ACCOUNT_ID_PATTERN.fullmatch(account_id):
        raise ConfigError(f"{flag} {account_id!r} must be the 12-digit AWS account id")
    return account_id


def site_key(value: str) -> str:
    """The lower-case key of a hospital: ``73`` -> ``73``, ``St. Mary's`` -> ``st-mary-s``."""
    return _SITE_KEY_CHARS.sub("-", value.strip().lower()).strip("-")


def site_names(value: str) -> tuple[str, str]:
    """``(site_id, folder)`` of a hospital value in a data table: ``site-<key>``, ``site_<key>``.

    The folder keeps the ``site_<hospitalid>`` name users of eICU expect; the site id uses a
    dash because it becomes an S3 key segment and IAM prefix (``check_site_id``).
    """
    key = site_key(value)
    if not key:
        raise ConfigError(f"site value {value!r} has no letter or digit; rename that site")
    return check_site_id(f"site-{key}"[:63].rstrip("-")), f"site_{key}"

"""AWS regions: which names are regions, and the ARN partition each belongs to.

One home for the rule, so that the stacks, onboarding and the revocation policies accept the
same regions and write the same ARNs for them. Both answers come from botocore's bundled
endpoint data, read offline, so a new region is known when botocore is upgraded, not when
someone edits a pattern.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator

from fl_core.errors import ConfigError

if TYPE_CHECKING:
    import botocore.session

EXAMPLE_REGION = "eu-west-1"


@cache
def _botocore_session() -> botocore.session.Session:
    import botocore.session  # loaded here: only the commands that check a region pay for it

    return botocore.session.get_session()


@cache
def known_regions(in_partition: str | None = None) -> frozenset[str]:
    """Regions botocore knows for S3: of ``in_partition`` (``aws``, ``aws-cn`` ...), or of all."""
    session = _botocore_session()
    partitions = session.get_available_partitions() if in_partition is None else [in_partition]
    return frozenset(
        region for name in partitions for region in session.get_available_regions("s3", name)
    )


def check_region(region: str, what: str = "region", *, in_partition: str | None = None) -> str:
    """``region`` if it is one (of ``in_partition``, when given); else a ``ConfigError`` whose
    message names ``what`` was wrong."""
    if region not in known_regions(in_partition):
        where = "an AWS region" if in_partition is None else f"an AWS region of {in_partition}"
        raise ConfigError(f"{what} {region!r} is not {where}; e.g. {EXAMPLE_REGION}")
    return region


def partition(region: str) -> str:
    """The ARN partition of ``region``: ``aws``, ``aws-cn``, ``aws-us-gov``, ``aws-iso`` ..."""
    name: str = _botocore_session().get_partition_for_region(check_region(region))
    return name


Region = Annotated[str, AfterValidator(check_region)]
"""A field that holds an AWS region botocore knows."""

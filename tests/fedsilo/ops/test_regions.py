"""One rule for what a region is, and which ARN partition it is in, for every caller."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from fedsilo.ops.regions import Region, check_region, known_regions, partition
from fl_core.errors import ConfigError


@pytest.mark.parametrize("region", ["eu-west-1", "us-east-1", "us-gov-west-1", "cn-north-1"])
def test_regions_of_every_partition_are_known(region: str) -> None:
    assert check_region(region) == region
    assert TypeAdapter(Region).validate_python(region) == region


@pytest.mark.parametrize("name", ["mars-north-1", "eu-fake-1", "EU-WEST-1", "eu-west-1 ", ""])
def test_a_name_botocore_does_not_know_is_refused_everywhere(name: str) -> None:
    with pytest.raises(ConfigError, match=r"is not an AWS region; e\.g\. eu-west-1"):
        check_region(name, "--region")
    with pytest.raises(ValidationError, match="not an AWS region"):
        TypeAdapter(Region).validate_python(name)


def test_a_partition_narrows_the_list() -> None:
    assert "eu-west-1" in known_regions("aws")
    assert "cn-north-1" not in known_regions("aws")
    assert known_regions("aws") < known_regions()
    with pytest.raises(ConfigError, match="'cn-north-1' is not an AWS region of aws"):
        check_region("cn-north-1", "--region", in_partition="aws")


@pytest.mark.parametrize(
    ("region", "expected"),
    [
        ("eu-west-1", "aws"),
        ("cn-northwest-1", "aws-cn"),
        ("us-gov-east-1", "aws-us-gov"),
        ("us-iso-east-1", "aws-iso"),
        ("us-isob-east-1", "aws-iso-b"),
    ],
)
def test_partition_of_a_region(region: str, expected: str) -> None:
    assert partition(region) == expected


def test_partition_of_a_name_that_is_no_region_is_refused() -> None:
    with pytest.raises(ConfigError, match="not an AWS region"):
        partition("mars-north-1")

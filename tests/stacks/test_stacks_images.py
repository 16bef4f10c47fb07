"""Pinned images in the cdk.json context: ECR by digest (preferred) or by exact tag."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from stackhelpers import hospitals_context, render, resources_of, synthesise

from fl_core.errors import ConfigError
from stacks.context import parse_context

REPOSITORY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/fedsilo/client"
DIGEST = "sha256:" + "0123456789abcdef" * 4


def with_images(**images: str) -> dict[str, Any]:
    raw = hospitals_context(1)
    raw["images"] = images
    return raw


@pytest.mark.parametrize(
    "image",
    [f"{REPOSITORY}@{DIGEST}", f"{REPOSITORY}:2026.12.1", f"{REPOSITORY}:v1_rc-2"],
)
def test_a_digest_or_an_exact_tag_is_accepted(image: str) -> None:
    context = parse_context(with_images(client=image, server=image))
    assert context.images.client == image and context.images.server == image


@pytest.mark.parametrize(
    ("image", "why"),
    [
        (f"{REPOSITORY}:latest", "latest"),
        (f"{REPOSITORY}@sha256:{'0' * 63}", "short digest"),
        (f"{REPOSITORY}@sha256:{'A' * 64}", "upper-case hex"),
        (f"{REPOSITORY}@sha512:{'0' * 128}", "another algorithm"),
        (f"{REPOSITORY}:v1@{DIGEST}", "a tag and a digest at once"),
        (f"{REPOSITORY}@{DIGEST}\n", "a trailing newline"),
        (f"{REPOSITORY}@{DIGEST[:-1]}\u0661", "a non-ASCII digit in the digest"),
        (f"\u0661{REPOSITORY[1:]}@{DIGEST}", "a non-ASCII digit in the account"),
        (f"{REPOSITORY}", "neither a tag nor a digest"),
        (f"docker.io/pytorch/pytorch@{DIGEST}", "not ECR"),
    ],
)
def test_anything_else_is_refused_naming_the_field(image: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_context(with_images(client=image))
    assert "images.client" in str(err.value), why
    assert "@sha256:" in str(err.value), "the message shows the digest form to write"


def test_the_task_definitions_pull_exactly_the_pinned_images(tmp_path: Path) -> None:
    server = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/fedsilo/server:2026.12.1"
    federation = synthesise(with_images(client=f"{REPOSITORY}@{DIGEST}", server=server), tmp_path)
    pulled = {}
    for role, stack in (("client", federation.hospitals[0]), ("server", federation.aggregator)):
        template = federation.template_json(stack)
        [task] = resources_of(template, "AWS::ECS::TaskDefinition").values()
        pulled[role] = [
            render(container["Image"], template, account=stack.account, region=stack.region)
            for container in task["Properties"]["ContainerDefinitions"]
        ]
    assert pulled == {"client": [f"{REPOSITORY}@{DIGEST}"], "server": [server]}

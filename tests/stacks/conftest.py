"""Fixtures for the CDK tests: each app is synthesised once per session (jsii is slow).

No ``__init__.py`` here on purpose: a package ``tests/stacks`` would be imported as ``stacks``
and shadow the real ``stacks`` package.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # for stackhelpers, in any import mode

from aws_cdk.assertions import Template
from stackhelpers import Federation, cdk_json_context, hospitals_context, render, synthesise


@pytest.fixture(scope="session")
def raw_context() -> dict[str, Any]:
    return copy.deepcopy(cdk_json_context())


@pytest.fixture(scope="session")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    """The app of the repository's own cdk.json (two hospitals, CPU aggregator)."""
    return synthesise(cdk_json_context(), tmp_path_factory.mktemp("cdk-out"))


@pytest.fixture(scope="session")
def gpu_federation(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    """A variant with a GPU aggregator and one hospital, to check that branch too."""
    raw = hospitals_context(1)
    raw["aggregator"] = {"gpu": True}
    return synthesise(raw, tmp_path_factory.mktemp("cdk-out-gpu"))


@pytest.fixture(scope="session")
def aggregator_template(federation: Federation) -> Template:
    return federation.template(federation.aggregator)


@pytest.fixture(scope="session")
def hospital_template(federation: Federation) -> Template:
    return federation.template(federation.hospitals[0])


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    yield


@pytest.fixture(scope="session")
def rendered() -> Any:
    return render

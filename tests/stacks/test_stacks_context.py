"""The cdk.json context model: a wrong or missing value stops synthesis and names the field."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from stackhelpers import REPO

from fl_core.errors import ConfigError
from stacks.context import parse_context


def with_change(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(raw)
    *parents, last = path.split(".")
    node: Any = changed
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is KeyError:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return changed


def test_the_repositorys_cdk_json_is_valid(raw_context: dict[str, Any]) -> None:
    context = parse_context(raw_context)
    assert context.hospitals and context.bucket_name.startswith("fedsilo-")


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("federation_id", "Eicu_Mortality", "federation_id"),
        ("federation_id", KeyError, "federation_id"),
        ("coordinating_account", "12345", "coordinating_account"),
        ("region", "europe", "region"),
        ("hospitals.1.site_id", "Site B", "hospitals.1.site_id"),
        ("hospitals.1.account_id", "abc", "hospitals.1.account_id"),
        ("hospitals.1.site_id", "site-a", "site-a"),
        ("hospitals.1.account_id", "111111111111", "coordinating account"),
        ("hospitals", "site-a", "hospitals"),
        ("hospital.instance_type", "m5.xlarge", "hospital.instance_type"),
        ("aggregator.gpu_instance_type", "t3.large", "aggregator.gpu_instance_type"),
        (
            "images.client",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/fedsilo:latest",
            "images.client",
        ),
        ("images.server", "pytorch/pytorch:2.13.0", "images.server"),
        ("log_retention_days", 42, "log_retention_days"),
        ("unexpected", 1, "unexpected"),
        ("hospital.surprise", True, "hospital.surprise"),
    ],
)
def test_a_wrong_value_names_its_field(
    raw_context: dict[str, Any], path: str, value: Any, named: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_context(with_change(raw_context, path, value))
    assert named in str(err.value)


def test_missing_context_says_what_to_add() -> None:
    with pytest.raises(ConfigError, match="federation_id"):
        parse_context(None)


def test_too_long_names_for_iam_are_refused(raw_context: dict[str, Any]) -> None:
    raw = with_change(raw_context, "hospitals.0.site_id", "s" * 60)
    with pytest.raises(ConfigError, match=r"hospitals\.0\.site_id"):
        parse_context(raw)


def test_context_is_frozen(raw_context: dict[str, Any]) -> None:
    context = parse_context(raw_context)
    with pytest.raises(ValueError, match="frozen"):
        context.region = "us-east-1"  # type: ignore[misc]


def test_app_py_exits_2_naming_the_field(raw_context: dict[str, Any], tmp_path: Any) -> None:
    bad = with_change(raw_context, "hospitals.0.account_id", "not-an-account")
    env = {
        **os.environ,
        "CDK_OUTDIR": str(tmp_path),
        "CDK_CONTEXT_JSON": json.dumps({"fedsilo": bad}),
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }
    result = subprocess.run(
        [sys.executable, str(REPO / "app.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "fedsilo.hospitals.0.account_id" in result.stderr


def test_python_app_py_reads_the_project_as_the_cdk_cli_does(
    raw_context: dict[str, Any], tmp_path: Any
) -> None:
    """``python app.py`` in a CDK project folder: its cdk.json and cdk.context.json, and the
    settings the CLI adds (path/asset metadata, version reporting), so the templates match
    ``npx cdk synth`` byte for byte (checked by hand with the pinned CLI 2.1148.1)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fedsilo_cdk_app", REPO / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "cdk.json").write_text(
        json.dumps({"app": "python app.py", "output": "out", "context": {"fedsilo": raw_context}})
    )
    (tmp_path / "cdk.context.json").write_text(json.dumps({"cached:lookup": 1}))
    context, outdir = module.project_settings(tmp_path)
    assert outdir == "out" and context["fedsilo"] == raw_context
    assert context["cached:lookup"] == 1
    assert context["aws:cdk:enable-path-metadata"] is True
    assert context["aws:cdk:version-reporting"] is True
    elsewhere, _ = module.project_settings(tmp_path / "no-project-here")
    assert elsewhere["fedsilo"] == json.loads((REPO / "cdk.json").read_text())["context"]["fedsilo"]


def test_a_federation_starts_with_no_hospital(raw_context: dict[str, Any]) -> None:
    """The centre deploys the aggregator (its bucket) before it can approve the first join."""
    assert parse_context({**raw_context, "hospitals": []}).hospitals == ()

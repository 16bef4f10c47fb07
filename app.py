#!/usr/bin/env python3
"""CDK app of a fedsilo federation: ``python app.py`` or ``npx cdk synth`` (see cdk.json).

Reads the ``fedsilo`` context block (``stacks.context.FederationContext``); a wrong value stops
synthesis with exit code 2 and the field named. cdk-nag's AWS Solutions and HIPAA Security
packs run on every synthesis; a finding that is not acknowledged on its resource fails it.

``python app.py`` writes the same templates as ``npx cdk synth``: it reads the context the
CLI would (``cdk.context.json``, then ``cdk.json`` of the current folder, else the one beside
this file) and adds the settings the CLI adds (path and asset metadata, version reporting),
into ``cdk.out`` (or cdk.json's ``output``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks

from fl_core.errors import ConfigError
from stacks.context import CONTEXT_KEY, parse_context
from stacks.federation import build_federation

CDK_JSON = Path(__file__).resolve().parent / "cdk.json"

# What the CDK v2 CLI (2.1148, pinned in package.json) adds to the context of every synth
# unless told otherwise (--no-path-metadata, --no-asset-metadata, --no-version-reporting).
CLI_CONTEXT: dict[str, object] = {
    "aws:cdk:enable-path-metadata": True,
    "aws:cdk:enable-asset-metadata": True,
    "aws:cdk:version-reporting": True,
    "aws:cdk:bundling-stacks": ["**"],
}


def run_by_cdk_cli() -> bool:
    return "CDK_OUTDIR" in os.environ


def project_settings(cwd: Path) -> tuple[dict[str, object], str]:
    """The context and output folder ``cdk synth`` would use when run in ``cwd``."""
    cdk_json = cwd / "cdk.json" if (cwd / "cdk.json").is_file() else CDK_JSON
    settings = json.loads(cdk_json.read_text())
    cached = cdk_json.parent / "cdk.context.json"  # lookups the CLI cached
    context: dict[str, object] = json.loads(cached.read_text()) if cached.is_file() else {}
    context.update(settings.get("context", {}))
    context.update(CLI_CONTEXT)
    return context, str(settings.get("output", "cdk.out"))


def main() -> int:
    if run_by_cdk_cli():  # the CLI passes cdk.json's context and the output folder itself
        app = cdk.App()
    else:  # ``python app.py``: read the project as the CLI would, write where it would
        cli_context, outdir = project_settings(Path.cwd())
        app = cdk.App(context=cli_context, outdir=outdir)
    try:
        context = parse_context(app.node.try_get_context(CONTEXT_KEY))
        build_federation(app, context)
    except ConfigError as err:
        print(f"fedsilo: {err}", file=sys.stderr)
        return err.exit_code
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app), HIPAASecurityChecks(app))
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())

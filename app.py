#!/usr/bin/env python3
"""CDK app of a fedsilo federation: ``python app.py`` or ``npx cdk synth`` (see cdk.json).

Reads the ``fedsilo`` context block (``stacks.context.FederationContext``); a wrong value stops
synthesis with exit code 2 and the field named. cdk-nag's AWS Solutions and HIPAA Security
packs run on every synthesis; a finding that is not acknowledged on its resource fails it.
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


def run_by_cdk_cli() -> bool:
    return "CDK_OUTDIR" in os.environ


def main() -> int:
    if run_by_cdk_cli():  # the CLI passes cdk.json's context and the output folder itself
        app = cdk.App()
    else:  # ``python app.py``: read cdk.json here and write ./cdk.out like the CLI would
        app = cdk.App(context=json.loads(CDK_JSON.read_text())["context"], outdir="cdk.out")
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

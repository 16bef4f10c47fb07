"""Synthesis time of the CDK app for 20 and 200 hospitals (``python -m bench --only cdk_synth``).

Each size runs in a fresh process (jsii keeps state between apps) and includes building the
constructs, writing the cloud assembly and the cdk-nag AWS Solutions and HIPAA Security packs,
as ``cdk synth`` does. Prints a small table; asserts nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._tables import write_rows

REPO = Path(__file__).resolve().parent.parent
SIZES = (20, 200)

_CHILD = """
import json, sys, time
sys.path.insert(0, {repo!r})
import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks
from stacks.context import parse_context
from stacks.federation import build_federation
raw = json.loads(open({repo!r} + "/cdk.json").read())["context"]["fedsilo"]
raw["hospitals"] = [{{"site_id": f"site-{{i:03d}}", "account_id": str(300000000000 + i)}}
                    for i in range({count})]
start = time.perf_counter()
app = cdk.App(outdir={outdir!r})
build_federation(app, parse_context(raw))
cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app), HIPAASecurityChecks(app))
built = time.perf_counter()
app.synth()
done = time.perf_counter()
print(json.dumps({{"build_s": built - start, "synth_s": done - built}}))
"""


def measure(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as outdir:
        code = _CHILD.format(repo=str(REPO), count=count, outdir=outdir)
        env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        total = time.perf_counter() - start
        stacks = len(list(Path(outdir).glob("*.template.json")))
    timings: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return {**timings, "total_s": total, "stacks": stacks}


def main(quick: bool = False) -> None:
    """Print the table; ``quick`` (``python -m bench --quick``) measures 20 hospitals only."""
    print(f"{'hospitals':>9} {'stacks':>6} {'build s':>8} {'synth+nag s':>11} {'process s':>9}")
    rows = []
    for count in SIZES[:1] if quick else SIZES:
        row = measure(count)
        rows.append({"hospitals": count, **row})
        print(
            f"{count:>9} {int(row['stacks']):>6} {row['build_s']:>8.1f} {row['synth_s']:>11.1f} "
            f"{row['total_s']:>9.1f}"
        )
    write_rows("cdk_synth", "CDK app build and synth seconds by hospitals", rows)


if __name__ == "__main__":
    main()

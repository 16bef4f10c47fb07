"""Build the whole federation's app: one AggregatorStack and one HospitalStack per hospital."""

from __future__ import annotations

import aws_cdk as cdk

from fl_core.errors import ConfigError
from stacks.aggregator import AggregatorStack
from stacks.context import FederationContext
from stacks.hospital import HospitalStack
from stacks.nag import skip_checkov


def stack_id(prefix: str, name: str) -> str:
    """PascalCase id from a dashed id (``site-001`` -> ``Site001``), stable across deploys."""
    return prefix + "".join(part.capitalize() for part in name.split("-"))


FEATURE_FLAGS = {
    # Server access logs are granted by bucket policy, not the legacy LogDeliveryWrite ACL,
    # so that every bucket can enforce bucket-owner object ownership (ACLs off).
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
}
"""CDK behaviours the stacks rely on; set here so tests and ``app.py`` build the same thing."""


def build_federation(
    app: cdk.App, context: FederationContext
) -> tuple[AggregatorStack, list[HospitalStack]]:
    """Add the federation's stacks to a fresh ``app`` (no construct may exist in it yet)."""
    for flag, value in FEATURE_FLAGS.items():
        app.node.set_context(flag, value)
    fid = stack_id("", context.federation_id)
    aggregator = AggregatorStack(app, f"Fedsilo{fid}Aggregator", context=context)
    skip_checkov(
        aggregator.exchange_key.key,
        "CKV_AWS_33",
        "The hospitals' statement names any principal but admits only the listed hospital task "
        "roles (aws:PrincipalArn, with the role's site tag), only via S3 in this region and "
        "only for their own objects' encryption context.",
    )
    hospitals = []
    seen: dict[str, str] = {}
    for site in context.hospitals:
        construct_id = f"Fedsilo{fid}Hospital{stack_id('', site.site_id)}"
        if construct_id in seen:
            raise ConfigError(
                f"hospitals: site ids {seen[construct_id]!r} and {site.site_id!r} give the same "
                f"stack id {construct_id}; rename one of them"
            )
        seen[construct_id] = site.site_id
        hospitals.append(HospitalStack(app, construct_id, context=context, site=site))
    return aggregator, hospitals

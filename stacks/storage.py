"""S3 buckets: the access log bucket, encrypted buckets, and the federation's exchange bucket."""

from __future__ import annotations

import json
from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from fl_core.errors import ConfigError
from stacks.context import FederationContext
from stacks.nag import acknowledge
from stacks.policies import hospital_bucket_statements

BUCKET_POLICY_LIMIT_BYTES = 20 * 1024
"""S3 rejects a bucket policy over 20 KB."""


def retained_private_bucket(
    scope: Construct,
    *,
    encryption: s3.BucketEncryption,
    lifecycle_rule: s3.LifecycleRule,
    encryption_key: kms.IKey | None = None,
    bucket_key_enabled: bool | None = None,
    bucket_name: str | None = None,
    access_logs: s3.IBucket | None = None,
    object_lock: bool = False,
    block_customer_keys: bool = False,
) -> s3.Bucket:
    """The ``Bucket`` of ``scope``: never public, TLS only, versioned, no ACLs, kept on delete.

    ``access_logs`` receives its server access logs under the prefix ``{scope id}/``.
    ``object_lock`` enables S3 Object Lock without a default retention (objects are locked one
    by one by whoever writes them); ``block_customer_keys`` refuses uploads under
    customer-provided keys (SSE-C), which the bucket's owner could never read.
    """
    return s3.Bucket(
        scope,
        "Bucket",
        bucket_name=bucket_name,
        encryption=encryption,
        encryption_key=encryption_key,
        bucket_key_enabled=bucket_key_enabled,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        versioned=True,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        server_access_logs_bucket=access_logs,
        server_access_logs_prefix=None if access_logs is None else f"{scope.node.id}/",
        removal_policy=RemovalPolicy.RETAIN,
        lifecycle_rules=[lifecycle_rule],
        object_lock_enabled=object_lock or None,
        blocked_encryption_types=[s3.BlockedEncryptionType.SSE_C] if block_customer_keys else None,
    )


class AccessLogBucket(Construct):
    """Target of S3 server access logs for the other buckets of the stack.

    S3 log delivery writes only to buckets encrypted with SSE-S3, so this is the one bucket
    without the customer managed key; it holds request metadata (keys, principals, times), no
    model or patient content.
    """

    def __init__(self, scope: Construct, construct_id: str, *, retention_days: int) -> None:
        super().__init__(scope, construct_id)
        self.bucket = retained_private_bucket(
            self,
            encryption=s3.BucketEncryption.S3_MANAGED,
            lifecycle_rule=s3.LifecycleRule(
                id="ExpireOldAccessLogs",
                expiration=Duration.days(retention_days),
                noncurrent_version_expiration=Duration.days(30),
                abort_incomplete_multipart_upload_after=Duration.days(7),
            ),
        )
        acknowledge(
            self.bucket,
            "AwsSolutions-S1",
            "This is the server access log bucket itself; logging it into itself would loop. "
            "Reads of it are recorded by CloudTrail management events.",
        )
        acknowledge(
            self.bucket,
            "HIPAA.Security-S3BucketLoggingEnabled",
            "This is the server access log bucket itself; logging it into itself would loop.",
        )
        acknowledge(
            self.bucket,
            "HIPAA.Security-S3DefaultEncryptionKMS",
            "S3 server access log delivery only supports SSE-S3 target buckets; the bucket holds "
            "request metadata, never model weights or patient data, and is encrypted at rest.",
        )
        acknowledge(
            self.bucket,
            "HIPAA.Security-S3BucketReplicationEnabled",
            "Access logs are versioned and retained in the region where the data lives; "
            "copying them to another region would widen where hospital metadata resides.",
        )


class EncryptedBucket(Construct):
    """A bucket encrypted with a customer managed key, versioned, TLS only, never public.

    Deleting the stack keeps the bucket and its data (``RemovalPolicy.RETAIN``); old versions
    expire after ``noncurrent_retention_days``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: kms.IKey,
        access_logs: s3.IBucket,
        noncurrent_retention_days: int,
        bucket_name: str | None = None,
        bucket_key_enabled: bool = True,
        object_lock: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        self.bucket = retained_private_bucket(
            self,
            bucket_name=bucket_name,
            object_lock=object_lock,
            block_customer_keys=True,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            bucket_key_enabled=bucket_key_enabled,
            access_logs=access_logs,
            lifecycle_rule=s3.LifecycleRule(
                id="ExpireOldVersions",
                noncurrent_version_expiration=Duration.days(noncurrent_retention_days),
                abort_incomplete_multipart_upload_after=Duration.days(7),
            ),
        )
        acknowledge(
            self.bucket,
            "HIPAA.Security-S3BucketReplicationEnabled",
            "Replication would copy hospital data or model updates to a second region and widen "
            "where it resides; versioning with retained deletes protects against loss instead.",
        )


class ExchangeBucket(EncryptedBucket):
    """The federation's exchange: the only place where anything crosses an account boundary.

    Its policy carries the hospital statements of ``stacks.policies`` (one allow for all
    hospitals, so 200 hospitals fit in the 20 KB policy limit; synthesis fails loudly if a
    context would not). S3 Bucket Keys are off so that every object is encrypted under a
    context naming its own key, which the key policy's per-site conditions rely on. Object Lock
    is on, without a default retention: the aggregator locks ledger entries, round results and
    global models one by one (``ledger_retention_days``).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        context: FederationContext,
        key: kms.IKey,
        access_logs: s3.IBucket,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            key=key,
            access_logs=access_logs,
            noncurrent_retention_days=context.noncurrent_version_retention_days,
            bucket_name=context.bucket_name,
            bucket_key_enabled=False,
            object_lock=True,
        )
        statements = hospital_bucket_statements(context, key.key_arn)
        for statement in statements:
            self.bucket.add_to_resource_policy(statement)
        self._check_policy_size(statements)

    def _check_policy_size(self, statements: Sequence[iam.PolicyStatement]) -> None:
        stack = Stack.of(self)
        rendered = json.dumps(
            [stack.resolve(statement.to_statement_json()) for statement in statements],
            separators=(",", ":"),
        )
        # The TLS-only statement CDK adds is under 400 bytes; keep 1 KB of headroom for it.
        if len(rendered) + 1024 > BUCKET_POLICY_LIMIT_BYTES:
            raise ConfigError(
                f"hospitals: the exchange bucket policy would be {len(rendered) + 1024} bytes, "
                f"over S3's {BUCKET_POLICY_LIMIT_BYTES}; shorten federation_id or site ids, or "
                "split the federation"
            )

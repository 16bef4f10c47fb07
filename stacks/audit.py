"""CloudTrail for the coordinating account: who read or wrote which exchange object, when."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_cloudtrail as cloudtrail
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct, IConstruct

from stacks.encryption import FederationKey, encrypted_log_group
from stacks.nag import acknowledge_generated_policy
from stacks.storage import EncryptedBucket
from stacks.trust import confine_generated_trust


class AuditTrail(Construct):
    """A multi-region trail with S3 data events on the exchange bucket and log file validation.

    Multi-region, so that calls made with the account's credentials in any other region (where
    nothing of the federation runs, and where a thief would go) are recorded too.

    Log files go to their own encrypted, versioned, retained bucket and to an encrypted
    CloudWatch log group; validation digests let an auditor prove that no log file was changed.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        trail_name: str,
        key: FederationKey,
        access_logs: s3.IBucket,
        log_retention: logs.RetentionDays,
        noncurrent_retention_days: int,
    ) -> None:
        super().__init__(scope, construct_id)
        key.allow_cloudtrail(trail_name)
        self.bucket = EncryptedBucket(
            self,
            "TrailBucket",
            key=key.key,
            access_logs=access_logs,
            noncurrent_retention_days=noncurrent_retention_days,
        ).bucket
        self.log_group = encrypted_log_group(
            self, "TrailLogs", key=key.key, retention=log_retention
        )
        self.trail = cloudtrail.Trail(
            self,
            "Trail",
            trail_name=trail_name,
            bucket=self.bucket,
            encryption_key=key.key,
            enable_file_validation=True,
            include_global_service_events=True,
            is_multi_region_trail=True,
            send_to_cloud_watch_logs=True,
            cloud_watch_log_group=self.log_group,
            management_events=cloudtrail.ReadWriteType.ALL,
        )
        logs_role = self.trail.node.find_child("LogsRole")
        acknowledge_generated_policy(logs_role)
        stack = Stack.of(self)
        confine_generated_trust(
            logs_role,
            f"arn:{stack.partition}:cloudtrail:{stack.region}:{stack.account}:trail/{trail_name}",
        )
        self._depend_only_on_unreferenced(logs_role)

    def _depend_only_on_unreferenced(self, logs_role: IConstruct) -> None:
        """Drop the trail's ``DependsOn`` entries that a reference already implies.

        CDK makes the trail depend on the whole role construct; the role itself is already
        referenced (CloudWatchLogsRoleArn), so listing it again draws cfn-lint's W3005.
        """
        cfn_trail = self.trail.node.default_child
        assert isinstance(cfn_trail, cloudtrail.CfnTrail)
        stack = Stack.of(self)
        implied_only = [logs_role.node.find_child("DefaultPolicy").node.default_child]
        if self.bucket.policy is not None:
            implied_only.append(self.bucket.policy.node.default_child)
        cfn_trail.add_override(
            "DependsOn",
            [stack.get_logical_id(element) for element in implied_only],  # type: ignore[arg-type]
        )

    def record_data_events(self, bucket: s3.IBucket) -> None:
        """Log every object-level read and write of ``bucket``."""
        self.trail.add_s3_event_selector(
            [cloudtrail.S3EventSelector(bucket=bucket)],
            read_write_type=cloudtrail.ReadWriteType.ALL,
            include_management_events=True,
        )

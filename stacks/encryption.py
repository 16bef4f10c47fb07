"""Customer managed KMS keys (rotation on, kept on stack deletion) and log groups under them."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct


class FederationKey(Construct):
    """A customer managed key with yearly rotation and an alias.

    ``key_policy`` statements are added by the constructs that use the key (the exchange bucket
    for hospitals, CloudWatch Logs and CloudTrail for the operations key); the default
    statement gives the owning account's IAM the control it needs to administer the key.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, alias: str, description: str
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            alias=alias,
            description=description,
            enable_key_rotation=True,
            pending_window=Duration.days(30),
            removal_policy=RemovalPolicy.RETAIN,
        )

    def allow_cloudwatch_logs(self) -> None:
        """Let CloudWatch Logs encrypt this account's log groups in this region with the key."""
        stack = Stack.of(self)
        log_groups = f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:*"
        self._allow_service(
            "CloudWatchLogsEncryptsThisAccountsLogGroups",
            f"logs.{stack.region}.amazonaws.com",
            [
                "kms:Encrypt*",
                "kms:Decrypt*",
                "kms:ReEncrypt*",
                "kms:GenerateDataKey*",
                "kms:Describe*",
            ],
            {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": log_groups}},
        )

    def allow_cloudtrail(self, trail_name: str) -> None:
        """Let CloudTrail encrypt the log files of this account's trail ``trail_name``."""
        stack = Stack.of(self)
        prefix = f"arn:{stack.partition}:cloudtrail"
        this_trail = {
            "aws:SourceArn": f"{prefix}:{stack.region}:{stack.account}:trail/{trail_name}"
        }
        trails = f"{prefix}:*:{stack.account}:trail/*"
        self._allow_service(
            "CloudTrailEncryptsThisTrailsLogs",
            "cloudtrail.amazonaws.com",
            ["kms:GenerateDataKey*"],
            {
                "StringEquals": this_trail,
                "StringLike": {"kms:EncryptionContext:aws:cloudtrail:arn": trails},
            },
        )
        self._allow_service(
            "CloudTrailDescribesKey",
            "cloudtrail.amazonaws.com",
            ["kms:DescribeKey"],
            {"StringEquals": this_trail},
        )

    def _allow_service(
        self, sid: str, service: str, actions: list[str], conditions: dict[str, dict[str, str]]
    ) -> None:
        """Let the AWS ``service`` call ``actions`` with the key under ``conditions``."""
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid=sid,
                principals=[iam.ServicePrincipal(service)],
                actions=actions,
                resources=["*"],
                conditions=conditions,
            )
        )


def encrypted_log_group(
    scope: Construct, construct_id: str, *, key: kms.IKey, retention: logs.RetentionDays
) -> logs.LogGroup:
    """A log group encrypted with ``key``, kept ``retention`` long and when the stack is deleted."""
    return logs.LogGroup(
        scope,
        construct_id,
        encryption_key=key,
        retention=retention,
        removal_policy=RemovalPolicy.RETAIN,
    )

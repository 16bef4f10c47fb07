"""Cutting an offboarded hospital off the exchange at once, in the live account.

Removing a hospital from ``cdk.json`` drops its grants only at the next ``cdk deploy`` of the
coordinating stack; until then it would keep reading every new global model. So ``fedsilo
offboard`` also writes explicit Deny statements into the exchange's bucket policy and key
policy (read-modify-write of the current documents), and records the site under
``revoked_hospitals`` in ``cdk.json``. The stacks render the very same statements from that
list (``stacks.policies``), so the next deploy carries them instead of dropping them.

A Deny names the revoked task role while another hospital of the federation lives in its
account, and the whole account once none does (any role the account could create is then shut
out, the task role included).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from fedsilo.ops.regions import partition
from fl_core.errors import ExchangeError
from fl_core.exchange.layout import ExchangeLayout

REVOKED_ROLES_SID = "RevokedHospitalRoles"
REVOKED_ACCOUNTS_SID = "RevokedHospitalAccounts"
REVOCATION_SIDS = (REVOKED_ROLES_SID, REVOKED_ACCOUNTS_SID)

Statement = dict[str, Any]


def exchange_key_alias(federation_id: str) -> str:
    """The exchange key's alias (``stacks.context.exchange_key_alias``, which a test compares)."""
    return f"alias/fedsilo/{federation_id}/exchange"


@dataclass(frozen=True)
class RevokedPrincipals:
    """Who is shut out of the exchange: task-role ARNs and whole accounts, sorted."""

    role_arns: tuple[str, ...]
    accounts: tuple[str, ...]

    @classmethod
    def of(
        cls,
        revoked: Iterable[tuple[str, str]],
        active_accounts: Iterable[str],
        role_arn_of: Callable[[str, str], str],
    ) -> RevokedPrincipals:
        """From ``(site_id, account_id)`` pairs; ``role_arn_of(site_id, account_id)`` names the
        role. An account that no active hospital shares is shut out whole, and its roles need
        no statement of their own (16 bytes instead of 65 a site: the bucket policy's 20 KB)."""
        pairs = sorted(set(revoked))
        active = set(active_accounts)
        return cls(
            role_arns=tuple(
                sorted({role_arn_of(site, account) for site, account in pairs if account in active})
            ),
            accounts=tuple(sorted({account for _, account in pairs if account not in active})),
        )


def _deny(sid: str, actions: str, resources: list[str] | str, condition: Statement) -> Statement:
    return {
        "Sid": sid,
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Action": actions,
        "Resource": resources,
        "Condition": condition,
    }


def _statements(
    revoked: RevokedPrincipals, actions: str, resources: list[str] | str
) -> list[Statement]:
    statements = []
    if revoked.role_arns:
        condition = {"ArnEquals": {"aws:PrincipalArn": list(revoked.role_arns)}}
        statements.append(_deny(REVOKED_ROLES_SID, actions, resources, condition))
    if revoked.accounts:
        condition = {"StringEquals": {"aws:PrincipalAccount": list(revoked.accounts)}}
        statements.append(_deny(REVOKED_ACCOUNTS_SID, actions, resources, condition))
    return statements


def bucket_revocation_statements(
    revoked: RevokedPrincipals, bucket_arn: str, federation_root: str
) -> list[Statement]:
    """Bucket policy denies: every S3 action on the bucket and the federation's objects."""
    return _statements(revoked, "s3:*", [bucket_arn, f"{bucket_arn}/{federation_root}*"])


def key_revocation_statements(revoked: RevokedPrincipals) -> list[Statement]:
    """Key policy denies: every KMS action on the exchange key."""
    return _statements(revoked, "kms:*", "*")


def merged_policy(current: Statement | None, statements: Sequence[Statement]) -> Statement:
    """``current`` with its revocation statements replaced by ``statements``."""
    document = current or {"Version": "2012-10-17", "Statement": []}
    kept = document.get("Statement", [])
    if isinstance(kept, dict):
        kept = [kept]
    others = [s for s in kept if s.get("Sid") not in REVOCATION_SIDS]
    return {**document, "Statement": [*others, *statements]}


def _document(policy: str | Statement) -> Statement:
    """A policy as AWS returns it (JSON text; moto's CloudFormation keeps the template's
    object as it was)."""
    found: Statement = json.loads(policy) if isinstance(policy, str) else policy
    return found


def revoke_in_bucket_policy(s3: Any, bucket: str, statements: Sequence[Statement]) -> None:
    """Read the bucket policy, replace its revocation statements, write it back."""
    try:
        try:
            current = _document(s3.get_bucket_policy(Bucket=bucket)["Policy"])
        except ClientError as err:
            if err.response["Error"]["Code"] != "NoSuchBucketPolicy":
                raise
            current = None
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(merged_policy(current, statements)))
    except (ClientError, BotoCoreError) as err:
        raise ExchangeError(
            f"could not write the revocation into the policy of bucket {bucket} ({err}); "
            "run `fedsilo offboard` again with the coordinating account's admin credentials"
        ) from err


def _key_of_alias(kms: Any, key_alias: str) -> str:
    """The key id behind ``key_alias`` (from ListAliases: DescribeKey falls under the very
    ``kms:*`` deny this module writes, in moto's evaluation of key policies)."""
    for page in kms.get_paginator("list_aliases").paginate():
        for alias in page["Aliases"]:
            if alias["AliasName"] == key_alias and "TargetKeyId" in alias:
                return str(alias["TargetKeyId"])
    raise ExchangeError(
        f"no KMS key has the alias {key_alias} in this account and region; deploy the "
        "coordinating stack, or use the coordinating account's credentials and region"
    )


def revoke_in_key_policy(kms: Any, key_alias: str, statements: Sequence[Statement]) -> None:
    """Read the exchange key's policy (found by its alias), replace its revocation
    statements, write it back."""
    try:
        key_id = _key_of_alias(kms, key_alias)
        current = _document(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
        kms.put_key_policy(
            KeyId=key_id,
            PolicyName="default",
            Policy=json.dumps(merged_policy(current, statements)),
        )
    except (ClientError, BotoCoreError) as err:
        raise ExchangeError(
            f"could not write the revocation into the policy of key {key_alias} ({err}); "
            "run `fedsilo offboard` again with the coordinating account's admin credentials"
        ) from err


@dataclass(frozen=True)
class CoordinatingAccount:
    """Clients of the coordinating account, where the exchange bucket and key live."""

    s3: Any
    kms: Any


def revoke_live(
    account: CoordinatingAccount,
    *,
    federation_id: str,
    region: str,
    bucket: str,
    key_alias: str,
    revoked: RevokedPrincipals,
) -> None:
    """Write the revocation statements into the live bucket and key policies now."""
    bucket_arn = f"arn:{partition(region)}:s3:::{bucket}"
    root = ExchangeLayout(federation_id).root
    revoke_in_bucket_policy(
        account.s3, bucket, bucket_revocation_statements(revoked, bucket_arn, root)
    )
    revoke_in_key_policy(account.kms, key_alias, key_revocation_statements(revoked))

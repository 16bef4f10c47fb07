"""Acting as the hospital's task role: the session and S3 store ``onboard check`` runs with.

The preflight must prove what the hospital's own role may do, so it runs with that role's
credentials (assumed with STS, or the task's own inside ECS), never the admin's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from fl_core.errors import ConfigError, ExchangeError

if TYPE_CHECKING:
    import boto3

    from fl_core.exchange.s3_store import S3Store


def hospital_session(
    role_arn: str | None, external_id: str | None, endpoint_url: str | None
) -> boto3.Session:
    """The hospital's task role (assumed with STS) or, without --role-arn, the current one."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    if role_arn is None:
        return boto3.Session()
    kwargs = {"RoleArn": role_arn, "RoleSessionName": "fedsilo-onboard-check"}
    if external_id:
        kwargs["ExternalId"] = external_id
    try:
        found = boto3.client("sts", endpoint_url=endpoint_url).assume_role(**kwargs)
    except (ClientError, BotoCoreError) as err:
        raise ExchangeError(
            f"cannot assume {role_arn} ({str(err).splitlines()[0]}); the hospital stack's task "
            "role trusts only ECS tasks: run `fedsilo onboard check` without --role-arn as a "
            "one-off task of the hospital's task definition (aws ecs run-task), or pass a role "
            "whose trust policy admits you"
        ) from err
    credentials = found["Credentials"]
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def s3_store_for(
    uri: str, session: boto3.Session, endpoint_url: str | None, kms_key_id: str | None
) -> S3Store:
    """An S3 store that acts with ``session``'s credentials."""
    from botocore.config import Config

    from fl_core.exchange.s3_store import S3Store

    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigError(f"--exchange {uri!r}: the preflight runs against s3://bucket[/prefix]")
    config = Config(s3={"addressing_style": "path"}) if endpoint_url else None
    client = session.client("s3", endpoint_url=endpoint_url, config=config)
    return S3Store(
        parts.netloc,
        parts.path.strip("/"),
        client=client,
        kms_key_id=kms_key_id,
        endpoint_url=endpoint_url,
    )

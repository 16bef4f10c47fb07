"""Choose the exchange store from a URI, so that protocol code never branches on the store type.

``s3_store`` (and with it boto3) is imported only for ``s3://`` URIs: a simulation over a
local folder runs without AWS libraries being loaded.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from fl_core.errors import ConfigError
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.store import ObjectStore

_ACCEPTED = "use file:///absolute/path (or a plain path) or s3://bucket/prefix"


def open_store(
    uri: str,
    *,
    endpoint_url: str | None = None,
    kms_key_id: str | None = None,
    role_arn: str | None = None,
    external_id: str | None = None,
    region: str | None = None,
) -> ObjectStore:
    """The store that ``uri`` names.

    Parameters
    ----------
    uri
        ``file:///abs/path`` or a plain path: a local directory; ``s3://bucket/prefix``: S3.
    endpoint_url, kms_key_id, role_arn, external_id, region
        S3 settings. Giving one of the first four with a local URI is a config error rather
        than being silently ignored (a hospital that sets a KMS key expects encryption);
        ``region`` is ignored there.

    Raises
    ------
    ConfigError
        For any other scheme, naming the URI and the accepted forms (exit code 2).
    """
    if not uri.strip():
        raise ConfigError(f"exchange URI is empty; {_ACCEPTED}")
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        from fl_core.exchange.s3_store import S3Store

        return S3Store.from_uri(
            uri,
            endpoint_url=endpoint_url,
            kms_key_id=kms_key_id,
            role_arn=role_arn,
            external_id=external_id,
            region=region,
        )
    # region is harmless without S3 (a shared config may always carry one); the rest is not.
    s3_only = {
        "endpoint_url": endpoint_url,
        "kms_key_id": kms_key_id,
        "role_arn": role_arn,
        "external_id": external_id,
    }
    given = sorted(name for name, value in s3_only.items() if value is not None)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ConfigError(f"exchange URI {uri!r} is not a local absolute path; {_ACCEPTED}")
        path = Path(unquote(parts.path))
    elif parts.scheme == "":
        path = Path(uri)
    else:
        raise ConfigError(
            f"exchange URI {uri!r} has unsupported scheme {parts.scheme!r}; {_ACCEPTED}"
        )
    if given:
        raise ConfigError(
            f"{', '.join(given)} only apply to s3:// exchanges, but the exchange is {uri!r}; "
            "drop them or use an s3:// URI"
        )
    return LocalDirectoryStore(path, durable=_durable(parts.query, uri))


def _durable(query: str, uri: str) -> bool:
    """``file:///dir?durable=false`` (a simulation's private exchange) skips fsync."""
    if not query:
        return True
    if query in ("durable=false", "durable=0"):
        return False
    if query in ("durable=true", "durable=1"):
        return True
    raise ConfigError(
        f"exchange URI {uri!r}: the only query a local exchange takes is ?durable=false"
    )

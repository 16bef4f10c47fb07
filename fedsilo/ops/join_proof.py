"""Proof of account ownership for a join request: a presigned STS ``GetCallerIdentity`` call.

The hospital admin presigns (SigV4, query form) a ``GET`` of ``GetCallerIdentity`` with the
hospital's own credentials; the signed headers include ``X-Fedsilo-Join-Request``, whose value
is the sha256 of the request's fields. The coordinating centre sends that request to STS
itself: STS checks the signature and answers with the account and ARN of the credentials that
signed it. Only those credentials can produce a signature STS accepts, and the signature covers
the binding header, so the account STS names owns exactly these fields (the pattern of
HashiCorp Vault's AWS IAM auth and of EKS's ``aws-iam-authenticator`` tokens).

Why presigned: a proof may be checked days after it was made, and STS refuses a header-signed
request whose ``X-Amz-Date`` is more than 15 minutes old; a query-signed one is valid for its
``X-Amz-Expires`` (at most 7 days), and never longer than the credentials that signed it (a
session token from SSO or an assumed role ends the proof with it).

The centre never sends the request where the file says: the URL is rebuilt from a fixed list of
STS endpoints (global, the federation's region, and the centre's own configured endpoint), and
only the signed query parameters are taken from the file, each checked.
"""

from __future__ import annotations

import datetime
from typing import Literal
from urllib.parse import parse_qs, quote, urlencode, urlsplit
from xml.etree import ElementTree

from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import BotoCoreError
from botocore.httpsession import URLLib3Session
from pydantic import BaseModel, ConfigDict

from fl_core.errors import ConfigError, ExchangeError

BINDING_HEADER = "X-Fedsilo-Join-Request"
MAX_VALID_S = 604_800  # SigV4 query signing: X-Amz-Expires of at most 7 days
GLOBAL_ENDPOINT = "https://sts.amazonaws.com/"
_ACTION = {"Action": "GetCallerIdentity", "Version": "2011-06-15"}
_SIGNED_HEADERS = f"host;{BINDING_HEADER.lower()}"
_AUTH_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)
_OPTIONAL_PARAMS = ("X-Amz-Security-Token",)
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_REDO = "ask the hospital admin to run `fedsilo onboard request` again and send the new file"


class StsProof(BaseModel):
    """The presigned ``GetCallerIdentity`` request, as the hospital's credentials signed it.

    ``headers`` are the signed headers to send besides ``Host`` (the binding header); the
    query of ``url`` carries action, version and signature. A ``GET`` has no body.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["GET"]
    url: str
    headers: dict[str, str]


class CallerIdentity(BaseModel):
    """What STS answered: the account and ARN of the credentials that signed the proof."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    account: str
    arn: str


def endpoint_of(url: str) -> str:
    """``scheme://host[:port]/`` in lower case: the form the allow-list compares."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}/"


def signing_region(endpoint_url: str, region: str) -> str:
    """STS's global endpoint signs in us-east-1; a regional or configured one in ``region``."""
    return "us-east-1" if endpoint_of(endpoint_url) == GLOBAL_ENDPOINT else region


def sign_proof(
    binding: str,
    credentials: ReadOnlyCredentials,
    endpoint_url: str,
    region: str,
    valid_s: int,
) -> StsProof:
    """Presign ``GetCallerIdentity`` at ``endpoint_url`` with the binding header signed."""
    if not 0 < valid_s <= MAX_VALID_S:
        raise ConfigError(f"a proof is valid for 1 to {MAX_VALID_S} s (7 days), not {valid_s}")
    request = AWSRequest(
        method="GET",
        url=endpoint_of(endpoint_url),
        data=dict(_ACTION),  # SigV4QueryAuth moves it into the signed query
        headers={BINDING_HEADER: binding},
    )
    SigV4QueryAuth(
        credentials, "sts", signing_region(endpoint_url, region), expires=valid_s
    ).add_auth(request)
    prepared = request.prepare()
    return StsProof(method="GET", url=prepared.url, headers={BINDING_HEADER: binding})


def allowed_endpoints(region: str, configured: str | None) -> frozenset[str]:
    """STS's global and regional endpoints of the aws partition, and the centre's own."""
    endpoints = {GLOBAL_ENDPOINT, f"https://sts.{region}.amazonaws.com/"}
    if configured:
        endpoints.add(endpoint_of(configured))
    return frozenset(endpoints)


def signed_query(proof: StsProof, binding: str, allowed: frozenset[str]) -> tuple[str, str]:
    """The allow-listed endpoint the proof was signed for and its checked query parameters.

    Refuses a proof that is not a presigned ``GetCallerIdentity``, is not bound to
    ``binding``, or names an endpoint outside ``allowed``.
    """
    endpoint = endpoint_of(proof.url)
    parts = urlsplit(proof.url.strip())
    if endpoint not in allowed or parts.path not in ("", "/") or parts.fragment:
        raise ConfigError(
            f"the join request's proof points at {endpoint}, which is not an STS endpoint of "
            f"this federation ({', '.join(sorted(allowed))}); {_REDO}"
        )
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=True)
    except ValueError as err:
        raise ConfigError(f"the join request's proof has a malformed query; {_REDO}") from err
    expected = {*_ACTION, *_AUTH_PARAMS}
    unknown = set(query) - expected - set(_OPTIONAL_PARAMS)
    missing = expected - set(query)
    repeated = [name for name, values in query.items() if len(values) != 1]
    if unknown or missing or repeated:
        odd = sorted(unknown | missing | set(repeated))
        raise ConfigError(
            f"the join request's proof is not a presigned GetCallerIdentity "
            f"({', '.join(odd)}); {_REDO}"
        )
    params = {name: values[0] for name, values in query.items()}
    scope = params["X-Amz-Credential"].split("/")
    if (
        any(params[name] != value for name, value in _ACTION.items())
        or params["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256"
        or len(scope) != 5
        or scope[3:] != ["sts", "aws4_request"]
    ):
        raise ConfigError(f"the join request's proof is not a signed GetCallerIdentity; {_REDO}")
    if params["X-Amz-SignedHeaders"] != _SIGNED_HEADERS or proof.headers != {
        BINDING_HEADER: binding
    }:
        raise ConfigError(
            f"the join request's proof is not bound to its fields (the signed {BINDING_HEADER} "
            f"header differs from their sha256): it was edited after it was signed; {_REDO}"
        )
    return endpoint, urlencode(params, quote_via=quote, safe="-_.~")


def proof_expiry(proof: StsProof) -> float:
    """Unix time at which the presigned request expires (``X-Amz-Date`` + ``X-Amz-Expires``)."""
    params = {k: v[0] for k, v in parse_qs(urlsplit(proof.url).query).items()}
    try:
        signed = datetime.datetime.strptime(params["X-Amz-Date"], _AMZ_DATE)
        expires = int(params["X-Amz-Expires"])
    except (KeyError, ValueError) as err:
        raise ConfigError(f"the join request's proof has no valid date or expiry; {_REDO}") from err
    if not 0 < expires <= MAX_VALID_S:
        raise ConfigError(f"the join request's proof claims X-Amz-Expires={expires}; {_REDO}")
    return signed.replace(tzinfo=datetime.UTC).timestamp() + expires


def ask_sts(endpoint: str, query: str, binding: str, timeout_s: float = 10.0) -> CallerIdentity:
    """Send the presigned request to ``endpoint`` (from the allow-list) and read the answer."""
    request = AWSRequest(method="GET", url=f"{endpoint}?{query}", headers={BINDING_HEADER: binding})
    try:
        response = URLLib3Session(timeout=timeout_s).send(request.prepare())
    except BotoCoreError as err:
        raise ExchangeError(f"cannot reach STS at {endpoint} ({err}); retry later") from err
    try:
        # the answer of an allow-listed STS endpoint, not the hospital's bytes; expat >= 2.4.1
        # (Python 3.11's) refuses entity expansion bombs
        document = ElementTree.fromstring(response.content)  # noqa: S314
    except ElementTree.ParseError:
        document = ElementTree.Element("unreadable")
    account = document.findtext(".//{*}GetCallerIdentityResult/{*}Account")
    arn = document.findtext(".//{*}GetCallerIdentityResult/{*}Arn")
    if response.status_code == 200 and account and arn:
        return CallerIdentity(account=account, arn=arn)
    code = document.findtext(".//{*}Error/{*}Code") or f"HTTP {response.status_code}"
    message = document.findtext(".//{*}Error/{*}Message") or "no GetCallerIdentity answer"
    raise ConfigError(
        f"STS refused the join request's proof ({code}: {message.splitlines()[0][:200]}); "
        f"{_REDO} (a proof lasts as long as the credentials that signed it)"
    )

"""Joining and leaving a federation: the hospital admin's and the coordinating centre's steps.

1. ``request``: a hospital admin states site id, account and region; fedsilo checks them (and
   that the admin's credentials belong to that account) and writes a join request carrying a
   proof only that account's credentials can make: a presigned STS ``GetCallerIdentity``
   whose signed ``X-Fedsilo-Join-Request`` header is the sha256 of the request's fields
   (``fedsilo.ops.join_proof``).
2. ``approve``: the coordinating centre checks that the fields still hash to the signed header,
   sends the proof to STS itself and requires STS to name the request's account; it refuses a
   site id or account that collides with a registered one, adds the hospital to ``cdk.json``,
   writes its registration (pending, noting the ARN STS named) and prints the one
   ``cdk deploy`` command to run.
3. ``check``: after deploying its stack, the hospital runs a preflight from inside its role and
   leaves the report under its own update prefix; the aggregator then turns the registration
   active (``fl_core.exchange.registry``).

``offboard`` revokes a registration (the aggregator refuses the site from its next admission
on) and removes the hospital from ``cdk.json``; its past contributions stay in the ledger.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedsilo.ops.join_proof import (
    BINDING_HEADER,
    MAX_VALID_S,
    StsProof,
    allowed_endpoints,
    ask_sts,
    proof_expiry,
    sign_proof,
    signed_query,
)
from fedsilo.ops.regions import check_region
from fedsilo.ops.revocation import (
    CoordinatingAccount,
    RevokedPrincipals,
    exchange_key_alias,
    revoke_live,
)
from fedsilo.ops.study_approval import newest_published
from fl_core.errors import (
    AccessDeniedError,
    ConfigError,
    ExchangeError,
    FedsiloError,
    ObjectNotFoundError,
)
from fl_core.exchange.manifests import PreflightCheck, PreflightReport, Registration
from fl_core.exchange.protocol import Exchange
from fl_core.hashing import canonical_json_sha256
from fl_core.ids import ACCOUNT_ID_REGEX, check_account_id, check_federation_id, check_site_id
from fl_core.secagg import masking
from fl_core.site_policy import SitePolicy, policy_summary

ROLE_PATH = "/fedsilo/"  # stacks.context.HOSPITAL_ROLE_PATH: the stacks grant exactly this role
JOIN_PARTITION = "aws"
"""Join proofs are presigned for STS's endpoints of this partition (``allowed_endpoints``)."""


class JoinRequest(BaseModel):
    """The file a hospital admin sends to the coordinating centre.

    Every field but ``proof`` is bound into the proof (``binding``); ``proof`` is what STS
    checks, so no field can change without the hospital's credentials signing again.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    federation_id: str
    site_id: str
    account_id: str = Field(pattern=ACCOUNT_ID_REGEX)
    region: str
    requested_by: str
    requested_unix: float
    expires_unix: float = Field(description="the centre must approve before this")
    secagg_public_key: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="the hospital's long-term X25519 public key for secure aggregation",
    )
    proof: StsProof

    def bound_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude={"proof"}, exclude_none=True)

    def binding(self) -> str:
        """The value the proof's signed binding header must carry."""
        return request_digest(self.bound_fields())


class VerifiedJoinRequest(BaseModel):
    """A join request whose account STS confirmed (``verify_ownership``), and who signed it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request: JoinRequest
    caller_arn: str


def request_digest(fields: dict[str, Any]) -> str:
    """sha256 of the request's canonical JSON: the binding the proof signs, not a signature."""
    return canonical_json_sha256(fields)


def caller_identity(sts: Any) -> tuple[str, str]:
    """``(account, arn)`` of the credentials in use; one-line errors when there are none."""
    try:
        identity = sts.get_caller_identity()
    except (ClientError, BotoCoreError) as err:
        raise ExchangeError(
            f"cannot tell which AWS account these credentials belong to ({err}); "
            "log in to the hospital's account (aws sso login / AWS_PROFILE) and retry"
        ) from err
    return str(identity["Account"]), str(identity["Arn"])


def build_request(
    federation_id: str,
    site_id: str,
    account_id: str,
    region: str,
    sts: Any,
    credentials: ReadOnlyCredentials,
    clock: Callable[[], float] = time.time,
    secagg_public_key: bytes | None = None,
    valid_s: int = MAX_VALID_S,
) -> JoinRequest:
    """The join request, its proof presigned with ``credentials`` at ``sts``'s endpoint.

    ``credentials`` must be those ``sts`` calls with: the proof is only as good as STS's
    answer to them, which the centre gets again when it approves.
    """
    check_federation_id(federation_id)
    check_site_id(site_id)
    check_account_id(account_id)
    check_region(region, "--region", in_partition=JOIN_PARTITION)
    account, arn = caller_identity(sts)
    if account != account_id:
        raise ConfigError(
            f"your credentials belong to account {account}, not {account_id}; log in to the "
            "hospital's own account, or correct --account-id"
        )
    now = clock()
    fields: dict[str, Any] = {
        "federation_id": federation_id,
        "site_id": site_id,
        "account_id": account_id,
        "region": region,
        "requested_by": arn,
        "requested_unix": now,
        "expires_unix": now + valid_s,
    }
    if secagg_public_key is not None:
        fields["secagg_public_key"] = secagg_public_key.hex()
    proof = sign_proof(
        request_digest(fields), credentials, str(sts.meta.endpoint_url), region, valid_s
    )
    return JoinRequest(**fields, proof=proof)


def load_request(path: Path) -> JoinRequest:
    try:
        request = JoinRequest.model_validate_json(path.read_bytes())
    except FileNotFoundError as err:
        raise ConfigError(f"join request {path} not found") from err
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(
            f"join request {path} is malformed: {where}: {first['msg']}; ask the hospital admin "
            "to run `fedsilo onboard request` again"
        ) from err
    if request.proof.headers.get(BINDING_HEADER) != request.binding():
        raise ConfigError(
            f"join request {path} was edited after it was signed (its fields no longer hash to "
            f"the signed {BINDING_HEADER}); ask the hospital admin to run `fedsilo onboard "
            "request` again and send the file unchanged"
        )
    check_site_id(request.site_id)
    return request


def verify_ownership(
    request: JoinRequest, federation_id: str, sts_endpoint: str | None, now: float
) -> VerifiedJoinRequest:
    """Send the request's proof to STS and require STS to name the request's account.

    fedsilo checks the federation, the region, the expiry, the binding of every field to the
    signed header and that the endpoint is STS's; STS checks the signature itself.
    ``sts_endpoint`` is the centre's own configured endpoint (tests, private endpoints).
    """
    if request.federation_id != federation_id:
        raise ConfigError(
            f"the request is for federation {request.federation_id!r}, this cdk.json is "
            f"{federation_id!r}; ask the hospital admin for a request to {federation_id!r}"
        )
    check_region(request.region, "the request's region", in_partition=JOIN_PARTITION)
    binding = request.binding()
    endpoint, query = signed_query(
        request.proof, binding, allowed_endpoints(request.region, sts_endpoint)
    )
    expiry = min(request.expires_unix, proof_expiry(request.proof))
    if now > expiry:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expiry))
        raise ConfigError(
            f"the join request of {request.site_id} expired at {stamp}; ask the hospital admin "
            "to run `fedsilo onboard request` again and send the new file"
        )
    identity = ask_sts(endpoint, query, binding)
    if identity.account != request.account_id:
        raise ConfigError(
            f"the join request claims account {request.account_id} but was signed with "
            f"credentials of account {identity.account} ({identity.arn}); ask the hospital admin "
            f"to run `fedsilo onboard request` logged in to account {request.account_id}"
        )
    return VerifiedJoinRequest(request=request, caller_arn=identity.arn)


# ---- cdk.json ---------------------------------------------------------------------------------


@dataclass
class CdkJson:
    """The ``fedsilo`` context block of ``cdk.json``, edited in place, other keys untouched."""

    path: Path
    document: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> CdkJson:
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError as err:
            raise ConfigError(
                f"{path} not found; run from the CDK project or pass --cdk-json"
            ) from err
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not JSON: {err}") from err
        block = document.get("context", {}).get("fedsilo")
        if not isinstance(block, dict):
            raise ConfigError(f"{path} has no context.fedsilo block")
        return cls(path, document)

    @property
    def block(self) -> dict[str, Any]:
        block: dict[str, Any] = self.document["context"]["fedsilo"]
        return block

    @property
    def federation_id(self) -> str:
        return str(self.block["federation_id"])

    @property
    def hospitals(self) -> list[dict[str, str]]:
        hospitals: list[dict[str, str]] = self.block.setdefault("hospitals", [])
        return hospitals

    def bucket_uri(self) -> str:
        bucket = self.block.get("exchange_bucket_name") or (
            f"fedsilo-{self.federation_id}-{self.block['coordinating_account']}"
        )
        return f"s3://{bucket}"

    def save(self) -> None:
        self.validate()
        self.path.write_text(json.dumps(self.document, indent=2) + "\n")

    def validate(self) -> None:
        """The stacks' own context model, when the CDK project is importable here."""
        try:
            from stacks.context import parse_context
        except ImportError:
            return
        parse_context(self.block)


def role_arn(account_id: str, federation_id: str, site_id: str) -> str:
    """The hospital task role the stacks create (stacks.context.hospital_role_arn)."""
    return f"arn:aws:iam::{account_id}:role{ROLE_PATH}{federation_id}-{site_id}"


def deploy_command(federation_id: str, site_id: str) -> str:
    def pascal(name: str) -> str:
        return "".join(part.capitalize() for part in name.split("-"))

    stack = f"Fedsilo{pascal(federation_id)}Hospital{pascal(site_id)}"
    return f"npx cdk deploy {stack} --profile <hospital {site_id} admin profile>"


def approve(verified: VerifiedJoinRequest, cdk: CdkJson, exchange: Exchange, now: float) -> str:
    """Register a hospital (pending) and return the deploy command for its admin."""
    request = verified.request
    if request.federation_id != cdk.federation_id:
        raise ConfigError(
            f"the request is for federation {request.federation_id!r}, this cdk.json is "
            f"{cdk.federation_id!r}"
        )
    key = request.secagg_public_key
    if key is not None and not masking.is_usable_public_key(bytes.fromhex(key)):
        raise ConfigError(
            f"the join request's secagg_public_key is a low-order X25519 point ({key[:16]}...), "
            "which would break every other hospital's secure aggregation pair masks; ask the "
            f"hospital admin of {request.site_id!r} to run `fedsilo onboard request` again "
            "(it makes a fresh key) and send the new file"
        )
    if request.account_id == str(cdk.block.get("coordinating_account")):
        raise ConfigError(
            f"account {request.account_id} is the coordinating account; a hospital needs its own"
        )
    registered = {r.site_id: r for r in exchange.list_registrations()}
    for hospital in cdk.hospitals:
        if hospital["site_id"] == request.site_id:
            raise ConfigError(
                f"site id {request.site_id!r} is already registered (account "
                f"{hospital['account_id']}); ask the hospital to choose another site id"
            )
        if hospital["account_id"] == request.account_id:
            raise ConfigError(
                f"account {request.account_id} is already registered as site "
                f"{hospital['site_id']!r}; one account serves one hospital"
            )
    if request.site_id in registered:
        clash = registered[request.site_id]
        raise ConfigError(
            f"site id {request.site_id!r} is already in the registry ({clash.status}); "
            "ask the hospital to choose another site id"
        )
    for registration in registered.values():
        if registration.account_id == request.account_id:
            raise ConfigError(
                f"account {request.account_id} is already in the registry as site "
                f"{registration.site_id!r} ({registration.status})"
            )
    cdk.hospitals.append({"site_id": request.site_id, "account_id": request.account_id})
    cdk.save()
    exchange.write_registration(
        Registration(
            site_id=request.site_id,
            account_id=request.account_id,
            role_arn=role_arn(request.account_id, request.federation_id, request.site_id),
            joined_unix=now,
            status="pending",
            changed_unix=now,
            note=f"approved join request {request.binding()[:12]}; STS named its signer "
            f"{verified.caller_arn}",
            secagg_public_key=request.secagg_public_key,
        ),
        None,
    )
    return deploy_command(request.federation_id, request.site_id)


def offboard(
    site_id: str,
    cdk: CdkJson,
    exchange: Exchange,
    now: float,
    live: CoordinatingAccount | None = None,
) -> Registration:
    """Revoke ``site_id``: its registration, its place in ``cdk.json``, and (given ``live``)
    its access to the exchange at once, by a Deny in the live bucket and key policies.

    ``cdk.json`` keeps the site under ``revoked_hospitals`` so that the stacks render the same
    Deny and the next deploy keeps it. Running it again after a failure is safe.
    """
    check_site_id(site_id)
    found = exchange.read_registration_with_etag(site_id)
    if found is None:
        raise ConfigError(f"site {site_id!r} is not in the registry of {exchange.describe()}")
    registration, etag = found
    listed = [h for h in cdk.hospitals if h["site_id"] == site_id]
    recorded = [h for h in cdk.block.get("revoked_hospitals", []) if h["site_id"] == site_id]
    account_id = next((h["account_id"] for h in [*listed, *recorded]), registration.account_id)
    if account_id is None:
        raise ConfigError(
            f"site {site_id!r} has no account id in {cdk.path} or in its registration; add "
            f'{{"site_id": "{site_id}", "account_id": "<its 12 digits>"}} under '
            "revoked_hospitals in cdk.json and run `fedsilo offboard` again"
        )
    change = {"status": "revoked", "changed_unix": now, "note": "offboarded"}
    revoked = Registration.model_validate({**registration.model_dump(), **change})
    exchange.write_registration(revoked, etag)
    cdk.block["hospitals"] = [h for h in cdk.hospitals if h["site_id"] != site_id]
    if not recorded:
        cdk.block.setdefault("revoked_hospitals", []).append(
            {"site_id": site_id, "account_id": account_id}
        )
    cdk.save()
    principals = RevokedPrincipals.of(
        [(h["site_id"], h["account_id"]) for h in cdk.block["revoked_hospitals"]],
        [h["account_id"] for h in cdk.hospitals],
        lambda site, account: role_arn(account, cdk.federation_id, site),
    )
    if live is not None:
        revoke_live(
            live,
            federation_id=cdk.federation_id,
            region=str(cdk.block["region"]),
            bucket=cdk.bucket_uri().removeprefix("s3://"),
            key_alias=exchange_key_alias(cdk.federation_id),
            revoked=principals,
        )
    return revoked


# ---- preflight (run from inside the hospital's role) --------------------------------------------


def site_policy_lines(policy: SitePolicy | None, federation_id: str) -> list[str]:
    """The site policy in force, for the admin's eyes only (never in the preflight report)."""
    if policy is None:
        return [
            "no site policy: the client will serve any study it is configured for; write one "
            "(docs/site-policy.md) and pass it with --site-policy or FEDSILO_SITE_POLICY"
        ]
    served = policy.study(federation_id) is not None
    verdict = (
        f"federation {federation_id} is among its studies"
        if served
        else f"federation {federation_id} is NOT among its studies: every round is declined "
        "(fedsilo site approve prints the entry to add)"
    )
    return [*policy_summary(policy), f"  {verdict}"]


def _check(name: str, run: Callable[[], str], fix: str) -> PreflightCheck:
    try:
        return PreflightCheck(name=name, ok=True, detail=run())
    except (FedsiloError, ClientError, BotoCoreError) as err:
        return PreflightCheck(name=name, ok=False, detail=str(err).splitlines()[0][:300], fix=fix)


def preflight(
    exchange: Exchange,
    site_id: str,
    sts: Any,
    kms_key_id: str | None,
    probe_site: str = "fedsilo-preflight-probe",
    clock: Callable[[], float] = time.time,
) -> tuple[PreflightReport, bool]:
    """Every check a hospital's role must pass; returns the report and whether it was saved."""

    def identity() -> str:
        account, arn = caller_identity(sts)
        registration = exchange.read_registration(site_id)
        if registration is None:
            raise ConfigError(f"no registration for {site_id} (approved yet?)")
        if registration.account_id != account:
            raise ConfigError(
                f"these credentials are account {account}; site {site_id} is registered for "
                f"account {registration.account_id}"
            )
        if registration.status == "revoked":
            raise ConfigError(f"site {site_id} was offboarded")
        return f"{arn} (account {account})"

    def read_global() -> str:
        latest = newest_published(exchange)
        if latest is None:
            if exchange.read_registration(site_id) is None:
                raise ExchangeError("cannot read this site's registration (the federation marker)")
            return "no global model yet; read the federation marker (own registration)"
        exchange.read_global_weights(latest)
        return f"read and verified the global model of round {latest.round_index}"

    def isolation() -> str:
        key = exchange.layout.update_manifest_key(1, probe_site)
        try:
            exchange.store.get(key)
        except AccessDeniedError:
            pass
        except ObjectNotFoundError as err:
            raise ExchangeError(
                "another hospital's update prefix answered 'not found' instead of 'access "
                "denied': this role may list or read beyond its own keys"
            ) from err
        else:
            raise ExchangeError("this role read another hospital's update")
        try:
            exchange.store.list_keys(exchange.layout.registry_prefix())
        except AccessDeniedError:
            return "another hospital's update and the registry listing are denied"
        raise ExchangeError("this role may list the registry of other hospitals")

    checks = [
        _check(
            "credentials belong to the registered account",
            identity,
            "use the hospital task role of the deployed HospitalStack (--role-arn)",
        ),
        _check(
            "can read the current global model",
            read_global,
            "redeploy HospitalStack; the exchange bucket policy must list this role",
        ),
        _check(
            "cannot read another hospital's keys",
            isolation,
            "remove extra S3 permissions from the hospital role; it may read only global "
            "models and its own registration",
        ),
    ]
    account = caller_identity(sts)[0] if checks[0].ok else "unknown"
    report = PreflightReport(
        federation_id=exchange.federation_id,
        site_id=site_id,
        account_id=account,
        checked_unix=clock(),
        checks=checks,
    )
    stamp = f"{int(report.checked_unix)}{secrets.token_hex(4)}"
    encryption = f"the exchange key {kms_key_id}" if kms_key_id else "the bucket's default KMS key"

    def write_report() -> str:
        exchange.write_preflight(report, stamp)
        return f"wrote a preflight report with {encryption}"

    write = _check(
        "can write its own update prefix, encrypted with KMS",
        write_report,
        "check the role's s3:PutObject on rounds/*/updates/<site>.* and kms:GenerateDataKey "
        "on the exchange key",
    )
    # the saved report holds the first checks; that it could be saved proves the last one
    final = PreflightReport(
        federation_id=report.federation_id,
        site_id=report.site_id,
        account_id=report.account_id,
        checked_unix=report.checked_unix,
        checks=[*checks, write],
    )
    return final, write.ok and final.passed

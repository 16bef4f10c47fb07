"""``fedsilo onboard request|approve|check`` and ``fedsilo offboard``: typer front-ends."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # the exchange and boto3 are imported by the commands, not by --help
    from fl_core.exchange.protocol import Exchange

onboard_app = typer.Typer(no_args_is_help=True, help="Join a federation (hospital and centre).")
console = Console()

EndpointOption = Annotated[str | None, typer.Option(help="S3-compatible endpoint (tests, MinIO)")]
CdkJsonOption = Annotated[Path, typer.Option("--cdk-json", help="the federation's cdk.json")]


def _sts_endpoint(endpoint_url: str | None, region: str) -> str:
    """The centre's own STS endpoint: ``--endpoint-url``, ``AWS_ENDPOINT_URL*`` or AWS's."""
    import boto3

    return str(boto3.client("sts", endpoint_url=endpoint_url, region_name=region).meta.endpoint_url)


def _exchange(uri: str, federation: str, endpoint_url: str | None) -> Exchange:
    from fl_core.exchange.protocol import Exchange
    from fl_core.exchange.uri import open_store

    return Exchange(open_store(uri, endpoint_url=endpoint_url), federation)


def _show_skipped(store: Exchange) -> None:
    """One line for each registration or preflight report the exchange skipped as malformed."""
    from fedsilo.ops.skipped_documents import skipped_rows

    for row in skipped_rows(store):
        console.print(row.line(), markup=False, highlight=False, soft_wrap=True)


@onboard_app.command("request")
def request_command(
    federation: Annotated[str, typer.Option(help="federation id (from the centre)")],
    site_id: Annotated[str, typer.Option("--site-id", help="this hospital's site id")],
    account_id: Annotated[str, typer.Option("--account-id", help="this hospital's account")],
    region: Annotated[str, typer.Option(help="AWS region of the federation")],
    out: Annotated[Path | None, typer.Option(help="where to write the request")] = None,
    endpoint_url: EndpointOption = None,
    state_dir: Annotated[
        Path,
        typer.Option(
            "--state-dir",
            help="the hospital's own state folder: its secure aggregation key is kept there "
            "(0600); give `fedsilo client run` the same --state-dir",
        ),
    ] = Path("fedsilo-state"),
    valid_days: Annotated[
        int,
        typer.Option(
            "--valid-days",
            min=1,
            max=7,
            help="days the centre has to approve (SigV4 allows 7 at most; temporary "
            "credentials end the proof when they expire)",
        ),
    ] = 7,
) -> None:
    """Hospital admin: check the inputs and write a join request, proven with STS, to send."""
    import boto3

    from fedsilo.engine.secagg_keys import hospital_public_key, key_path
    from fedsilo.ops.onboarding import build_request
    from fl_core.errors import ConfigError
    from fl_core.ids import check_site_id

    check_site_id(site_id)
    session = boto3.Session(region_name=region)
    sts = session.client("sts", endpoint_url=endpoint_url)
    found = session.get_credentials()
    if found is None:
        raise ConfigError(
            "no AWS credentials; log in to the hospital's account (aws sso login / "
            "AWS_PROFILE) and retry"
        )
    credentials = found.get_frozen_credentials()
    public_key = hospital_public_key(key_path(state_dir, site_id))
    request = build_request(
        federation,
        site_id,
        account_id,
        region,
        sts,
        credentials,
        secagg_public_key=public_key,
        valid_s=valid_days * 86_400,
    )
    path = out or Path(f"join-request-{site_id}.json")
    path.write_text(request.model_dump_json(indent=2) + "\n")
    expires = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(request.expires_unix))
    console.print(
        f"wrote {path}, proven with STS as {request.requested_by}; send it to the "
        f"coordinating centre unchanged, to approve before {expires}",
        highlight=False,
    )
    if credentials.token:
        console.print(
            "these are temporary credentials (SSO or an assumed role): the proof stops "
            "working when they expire; the centre must approve before then",
            highlight=False,
        )


@onboard_app.command("approve")
def approve_command(
    request_file: Annotated[Path, typer.Argument(help="the hospital's join request")],
    cdk_json: CdkJsonOption = Path("cdk.json"),
    exchange: Annotated[str | None, typer.Option(help="default: s3://<exchange bucket>")] = None,
    endpoint_url: EndpointOption = None,
) -> None:
    """Coordinating centre: have STS confirm the hospital's account, register the hospital
    (pending) and print its deploy command."""
    from fedsilo.ops.onboarding import CdkJson, approve, load_request, verify_ownership

    request = load_request(request_file)
    cdk = CdkJson.load(cdk_json)
    sts_endpoint = _sts_endpoint(endpoint_url, request.region)
    verified = verify_ownership(request, cdk.federation_id, sts_endpoint, time.time())
    store = _exchange(exchange or cdk.bucket_uri(), cdk.federation_id, endpoint_url)
    try:
        command = approve(verified, cdk, store, time.time())
    finally:  # a malformed registration stands as revoked: it may be why approve refused
        _show_skipped(store)
    console.print(
        f"registered {request.site_id} (account {request.account_id}, confirmed by STS: "
        f"{verified.caller_arn}) as pending; added it to {cdk_json}.",
        highlight=False,
    )
    console.print(
        "Redeploy the aggregator stack (its bucket policy now lists the hospital), "
        "then the hospital admin runs:",
        highlight=False,
    )
    console.print(f"  {command}", highlight=False, soft_wrap=True)


@onboard_app.command("check")
def check_command(
    federation: Annotated[str, typer.Option(help="federation id")],
    site_id: Annotated[str, typer.Option("--site-id", help="this hospital's site id")],
    exchange: Annotated[str, typer.Option(help="s3://<exchange bucket>")],
    role_arn: Annotated[str | None, typer.Option(help="hospital task role to assume")] = None,
    external_id: Annotated[str | None, typer.Option(help="external id for the role")] = None,
    kms_key_id: Annotated[
        str | None, typer.Option(help="the exchange key ARN (ExchangeKeyArn)")
    ] = None,
    endpoint_url: EndpointOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print one JSON document (docs/cli-json.md) instead")
    ] = False,
    site_policy: Annotated[
        Path | None,
        typer.Option(
            "--site-policy",
            help="this hospital's site policy, shown here only (default: env "
            "FEDSILO_SITE_POLICY or FEDSILO_SITE_POLICY_JSON)",
        ),
    ] = None,
) -> None:
    """Hospital admin: preflight from inside the hospital's role, as a checklist.

    Exit 0 when every check passes, 1 otherwise (with --json too, after the document).
    """
    from fedsilo.ops.aws_session import hospital_session, s3_store_for
    from fedsilo.ops.onboarding import preflight, site_policy_lines
    from fl_core.errors import FedsiloError
    from fl_core.exchange.protocol import Exchange
    from fl_core.site_policy import load_site_policy

    policy = load_site_policy(site_policy)  # a bad policy stops here, before any check runs
    if as_json:  # stdout holds the document alone: warnings go to stderr
        from fedsilo.engine.logs import configure_logging

        configure_logging("console", "WARNING")
    session = hospital_session(role_arn, external_id, endpoint_url)
    store = Exchange(s3_store_for(exchange, session, endpoint_url, kms_key_id), federation)
    sts = session.client("sts", endpoint_url=endpoint_url)
    report, passed = preflight(store, site_id, sts, kms_key_id)
    # reports under this site's key that the aggregator cannot read as one (a role that may
    # not list the prefix shows none; the aggregator still sees them)
    with contextlib.suppress(FedsiloError):
        store.list_preflights(site_id)
    if as_json:
        from fedsilo.cli.json_documents import SkippedDocument, onboard_check_json
        from fedsilo.ops.skipped_documents import skipped_rows

        skipped = [SkippedDocument.model_validate(row) for row in skipped_rows(store)]
        print(onboard_check_json(report, passed, skipped))
        if not passed:
            raise FedsiloError(f"preflight of {site_id} failed; see the checks in the document")
        return
    _show_skipped(store)
    table = Table(title=f"preflight of {site_id} in federation {federation}")
    for column in ("", "check", "detail", "fix"):
        table.add_column(column)
    for check in report.checks:
        table.add_row(
            "[green]✓[/]" if check.ok else "[red]✗[/]", check.name, check.detail, check.fix or ""
        )
    console.print(table)
    for line in site_policy_lines(policy, federation):
        console.print(line, markup=False, highlight=False)
    if not passed:
        raise FedsiloError(f"preflight of {site_id} failed; fix the crosses above and rerun")
    console.print("preflight passed: the aggregator activates this site at its next poll")


def offboard_command(
    site_id: Annotated[str, typer.Option("--site-id", help="the hospital to remove")],
    cdk_json: CdkJsonOption = Path("cdk.json"),
    exchange: Annotated[str | None, typer.Option(help="default: s3://<exchange bucket>")] = None,
    endpoint_url: EndpointOption = None,
) -> None:
    """Coordinating centre: revoke a hospital now; the exchange denies it from this moment."""
    import boto3

    from fedsilo.ops.onboarding import CdkJson, offboard, role_arn
    from fedsilo.ops.revocation import CoordinatingAccount

    cdk = CdkJson.load(cdk_json)
    store = _exchange(exchange or cdk.bucket_uri(), cdk.federation_id, endpoint_url)
    region = str(cdk.block["region"])
    live = CoordinatingAccount(
        s3=boto3.client("s3", endpoint_url=endpoint_url, region_name=region),
        kms=boto3.client("kms", endpoint_url=endpoint_url, region_name=region),
    )
    offboard(site_id, cdk, store, time.time(), live)
    [entry] = [h for h in cdk.block["revoked_hospitals"] if h["site_id"] == site_id]
    account = entry["account_id"]
    whole_account = all(h["account_id"] != account for h in cdk.hospitals)
    denied = role_arn(account, cdk.federation_id, site_id) + (
        f" and every other principal of account {account}" if whole_account else ""
    )
    console.print(
        f"revoked {site_id}: the exchange bucket and key deny {denied} from now on, and the "
        f"aggregator refuses its updates; {cdk_json} lists it under revoked_hospitals, so the "
        "next deploy keeps the deny",
        highlight=False,
    )

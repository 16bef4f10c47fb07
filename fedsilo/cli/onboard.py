"""``fedsilo onboard request|approve|check`` and ``fedsilo offboard``: typer front-ends."""

from __future__ import annotations

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


def _sts(endpoint_url: str | None, region: str | None = None) -> object:
    import boto3

    return boto3.client("sts", endpoint_url=endpoint_url, region_name=region)


def _exchange(uri: str, federation: str, endpoint_url: str | None) -> Exchange:
    from fl_core.exchange.protocol import Exchange
    from fl_core.exchange.uri import open_store

    return Exchange(open_store(uri, endpoint_url=endpoint_url), federation)


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
) -> None:
    """Hospital admin: check the inputs and write a signed join request to send."""
    from fedsilo.engine.secagg_keys import hospital_public_key, key_path
    from fedsilo.ops.onboarding import build_request
    from fl_core.ids import check_site_id

    sts = _sts(endpoint_url, region)
    check_site_id(site_id)
    public_key = hospital_public_key(key_path(state_dir, site_id))
    request = build_request(
        federation, site_id, account_id, region, sts, secagg_public_key=public_key
    )
    path = out or Path(f"join-request-{site_id}.json")
    path.write_text(request.model_dump_json(indent=2) + "\n")
    console.print(
        f"wrote {path} (sha256 {request.sha256[:12]}); send it to the coordinating "
        "centre unchanged",
        highlight=False,
    )


@onboard_app.command("approve")
def approve_command(
    request_file: Annotated[Path, typer.Argument(help="the hospital's join request")],
    cdk_json: CdkJsonOption = Path("cdk.json"),
    exchange: Annotated[str | None, typer.Option(help="default: s3://<exchange bucket>")] = None,
    endpoint_url: EndpointOption = None,
) -> None:
    """Coordinating centre: register the hospital (pending) and print its deploy command."""
    from fedsilo.ops.onboarding import CdkJson, approve, load_request

    request = load_request(request_file)
    cdk = CdkJson.load(cdk_json)
    store = _exchange(exchange or cdk.bucket_uri(), cdk.federation_id, endpoint_url)
    command = approve(request, cdk, store, time.time())
    console.print(
        f"registered {request.site_id} (account {request.account_id}) as pending; "
        f"added it to {cdk_json}.",
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
    kms_key_id: Annotated[str | None, typer.Option(help="exchange key id or alias")] = None,
    endpoint_url: EndpointOption = None,
) -> None:
    """Hospital admin: preflight from inside the hospital's role, as a checklist."""
    from fedsilo.ops.aws_session import hospital_session, s3_store_for
    from fedsilo.ops.onboarding import preflight
    from fl_core.errors import FedsiloError
    from fl_core.exchange.protocol import Exchange

    session = hospital_session(role_arn, external_id, endpoint_url)
    store = Exchange(s3_store_for(exchange, session, endpoint_url, kms_key_id), federation)
    sts = session.client("sts", endpoint_url=endpoint_url)
    report, passed = preflight(store, site_id, sts, kms_key_id)
    table = Table(title=f"preflight of {site_id} in federation {federation}")
    for column in ("", "check", "detail", "fix"):
        table.add_column(column)
    for check in report.checks:
        table.add_row(
            "[green]✓[/]" if check.ok else "[red]✗[/]", check.name, check.detail, check.fix or ""
        )
    console.print(table)
    if not passed:
        raise FedsiloError(f"preflight of {site_id} failed; fix the crosses above and rerun")
    console.print("preflight passed: the aggregator activates this site at its next poll")


def offboard_command(
    site_id: Annotated[str, typer.Option("--site-id", help="the hospital to remove")],
    cdk_json: CdkJsonOption = Path("cdk.json"),
    exchange: Annotated[str | None, typer.Option(help="default: s3://<exchange bucket>")] = None,
    endpoint_url: EndpointOption = None,
) -> None:
    """Coordinating centre: revoke a hospital now; its later updates are refused."""
    from fedsilo.ops.onboarding import CdkJson, offboard

    cdk = CdkJson.load(cdk_json)
    store = _exchange(exchange or cdk.bucket_uri(), cdk.federation_id, endpoint_url)
    offboard(site_id, cdk, store, time.time())
    console.print(
        f"revoked {site_id}: the aggregator refuses its updates from the next "
        f"admission; removed it from {cdk_json} (redeploy the aggregator stack to "
        "drop its grants)",
        highlight=False,
    )

"""``fedsilo site``: a hospital's own view before and during a federation.

``check`` tests the hospital's prepared folder against the federation's feature schema and
writes the full report locally; the site policy commands join this group beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fedsilo.cli.ops import EndpointArg

site_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="A hospital's readiness checks and site policy.",
)
console = Console()


@site_app.command("check")
def check_command(
    data: Annotated[
        Path, typer.Option("--data", help="the hospital's folder from `fedsilo data prepare`")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="folder for the local report and the preflight summary")
    ],
    schema: Annotated[
        Path | None,
        typer.Option("--schema", help="the federation's feature schema file (from the centre)"),
    ] = None,
    exchange: Annotated[
        str | None,
        typer.Option(
            "--exchange",
            envvar="FEDSILO_EXCHANGE",
            help="instead of --schema: read the study of the newest published global model",
        ),
    ] = None,
    federation: Annotated[
        str | None,
        typer.Option("--federation-id", envvar="FEDSILO_FEDERATION_ID", help="with --exchange"),
    ] = None,
    endpoint_url: EndpointArg = None,
    site_policy: Annotated[
        Path | None,
        typer.Option(
            "--site-policy",
            help="take the disclosure floor from this site policy (default: FEDSILO_SITE_POLICY "
            "or FEDSILO_SITE_POLICY_JSON, as client run; else --min-stays, --min-events)",
        ),
    ] = None,
    min_stays: Annotated[
        int, typer.Option("--min-stays", min=1, help="floor: smallest count the summary shows")
    ] = 10,
    min_events: Annotated[
        int, typer.Option("--min-events", min=1, help="floor: fewest events the summary shows")
    ] = 5,
) -> None:
    """Check this hospital's prepared data against the federation's feature schema.

    Writes the full report (site-check.html, site-check.json: exact counts, it stays here)
    and the preflight summary (preflight-summary.json: pass/fail and counts over the floor,
    the part you may share) to --out. Nothing is uploaded. Exit 1 when the data does not fit.
    """
    from fedsilo.ops.site_check import check_site, failure_line, published_schema
    from fedsilo.ops.site_check_html import write_site_check
    from fl_core.disclosure import DisclosureFloor
    from fl_core.errors import ConfigError, SiteCheckError

    if (schema is None) == (exchange is None):
        raise ConfigError("give the federation's schema: --schema FILE or --exchange URI")
    if schema is not None:
        from fl_core.data.feature_schema import read_feature_schema

        federation_schema, source = read_feature_schema(schema), str(schema)
    else:
        from fedsilo.cli.ops import open_exchange

        if federation is None:
            raise ConfigError("--exchange needs --federation-id (or FEDSILO_FEDERATION_ID)")
        assert exchange is not None
        opened = open_exchange(exchange, federation, endpoint_url)
        federation_schema = published_schema(opened)
        source = f"the study published in {exchange} ({federation})"
    floor = DisclosureFloor(min_stays=min_stays, min_events=min_events)
    from fl_core.site_policy import load_site_policy

    policy = load_site_policy(site_policy)  # or FEDSILO_SITE_POLICY(_JSON), as client run
    if policy is not None and policy.disclosure_floor is not None:
        floor = policy.disclosure_floor
    result = check_site(data, federation_schema, source, floor)
    paths = write_site_check(result, out)
    console.print(
        f"full report (stays at this hospital, do not share): {paths['html']}, {paths['report']}",
        markup=False,
        highlight=False,
    )
    console.print(
        f"preflight summary (pass/fail and counts of at least {floor.min_stays} stays and "
        f"{floor.min_events} events; yours to share, nothing was uploaded): {paths['preflight']}",
        markup=False,
        highlight=False,
    )
    console.print(result.preflight.model_dump_json(indent=2), markup=False, highlight=False)
    if not result.report.passed:
        raise SiteCheckError(failure_line(result.report, paths["html"]))
    console.print("site check passed: the data fits the federation's schema")

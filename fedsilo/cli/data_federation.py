"""``fedsilo data schema`` and ``fedsilo data profile``: the centre's view of the inputs.

``schema`` writes the feature schema a hospital checks its folder against (``fedsilo site
check --schema``); ``profile`` adds up the profiles the hospitals sent with their round-0
moments report into the federation's cohort, before any training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fedsilo.cli.ops import EndpointArg, ExchangeArg

console = Console()


def schema_command(
    out: Annotated[Path, typer.Option("--out", help="the schema file to write (JSON)")],
    config: Annotated[
        Path | None, typer.Option("--config", help="the federation's config (its data source)")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="instead of --config: a folder from `fedsilo data prepare`"),
    ] = None,
) -> None:
    """Write the federation's feature schema (names, kinds, possible ranges) for hospitals."""
    from fl_core.data.feature_schema import (
        schema_from_names,
        schema_of_prepared,
        write_feature_schema,
    )
    from fl_core.errors import ConfigError

    if config is not None and data is not None:
        raise ConfigError("give --config or --data, not both")
    if data is not None:
        schema = schema_of_prepared(data)
    else:
        from fedsilo.engine.app import build_source
        from fl_core.config import load_config

        federation = load_config(config)
        if federation.data.source == "prepared" and federation.data.path is not None:
            schema = schema_of_prepared(federation.data.path)
        else:
            schema = schema_from_names(build_source(federation).feature_names())
    write_feature_schema(schema, out)
    ranged = sum(f.valid_range is not None for f in schema.features)
    console.print(
        f"feature schema: {len(schema.features)} features ({ranged} with a possible range) "
        f"-> {out}; hospitals check against it with: fedsilo site check --schema {out.name}",
        markup=False,
        highlight=False,
    )


def profile_command(
    exchange: ExchangeArg,
    federation: Annotated[
        str, typer.Option("--federation-id", envvar="FEDSILO_FEDERATION_ID", help="federation id")
    ],
    out: Annotated[Path, typer.Option("--out", help="folder for data-profile.html and .json")],
    endpoint_url: EndpointArg = None,
    max_examples: Annotated[
        int,
        typer.Option("--max-examples", help="the most stays one hospital may report"),
    ] = 10_000_000,
) -> None:
    """Pool the hospitals' data profiles (from their round-0 reports) into the cohort."""
    from fedsilo.cli.ops import open_exchange
    from fedsilo.ops.data_profile import federated_profile
    from fedsilo.ops.profile_view import write_data_profile
    from fl_core.errors import ConfigError

    profile = federated_profile(open_exchange(exchange, federation, endpoint_url), max_examples)
    if not profile.sites:
        refused = f" (refused: {profile.refused})" if profile.refused else ""
        raise ConfigError(
            f"federation {federation}: no hospital has reported a data profile yet{refused}; "
            "hospitals send it with their first report when `fedsilo client run` starts"
        )
    paths = write_data_profile(profile, out)
    withheld = sum(len(sites) for f in profile.pooled.features for sites in f.withheld_by)
    console.print(
        f"{len(profile.sites)} hospitals profiled, {len(profile.refused)} refused, "
        f"{withheld} cells withheld under the hospitals' floors -> {paths['html']}, "
        f"{paths['json']}",
        markup=False,
        highlight=False,
    )

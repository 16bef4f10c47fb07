"""``fedsilo server run`` and ``fedsilo client run``: what the ECS tasks run.

Settings come from flags, their ``FEDSILO_*`` environment variables (the task definitions set
those) and an optional config file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fedsilo.cli.options import (
    ConfigOption,
    EndpointUrlOption,
    ExchangeOption,
    FederationOption,
    ServiceLogFormat,
    check_format,
    privacy_overrides,
)
from fedsilo.cli.output import print_privacy

if TYPE_CHECKING:
    from fl_core.config import FederationConfig


def service_config(
    config: Path | None,
    exchange: str | None,
    federation_id: str | None,
    data: str | None,
    endpoint_url: str | None = None,
    extra: dict[str, Any] | None = None,
) -> FederationConfig:
    from fl_core.config import load_config
    from fl_core.errors import FedsiloError

    overrides: dict[str, Any] = {
        "exchange.uri": exchange,
        "federation_id": federation_id,
        "exchange.endpoint_url": endpoint_url,
        "exchange.ledger_retention_days": os.environ.get("FEDSILO_LEDGER_RETENTION_DAYS"),
        **(extra or {}),
    }
    if data is not None:
        if data.startswith("s3://"):
            raise FedsiloError(
                f"--data {data}: reading hospital data straight from S3 is not supported yet; "
                "sync it to a local folder (aws s3 sync) and pass that folder"
            )
        overrides.update({"data.source": "prepared", "data.path": data})
    return load_config(config, overrides)


def server_run(
    config: ConfigOption = None,
    exchange: ExchangeOption = None,
    federation_id: FederationOption = None,
    sites: Annotated[
        str | None,
        typer.Option(
            envvar="FEDSILO_SITES",
            help="comma-separated site ids (default: the registry's active hospitals)",
        ),
    ] = None,
    endpoint_url: EndpointUrlOption = None,
    out: Annotated[
        Path | None,
        typer.Option(help="also write a run folder here (config, metrics, final model)"),
    ] = None,
    dp_epsilon: Annotated[
        float | None,
        typer.Option(
            "--dp-epsilon",
            help="DP-FedAvg (client-level DP at the aggregator): target epsilon; hospitals set "
            "their own DP-SGD with `client run --dp-target-epsilon`",
        ),
    ] = None,
    dp_delta: Annotated[
        float | None, typer.Option("--dp-delta", help="DP-FedAvg delta (< 1/hospitals)")
    ] = None,
    secure_aggregation: Annotated[
        bool | None,
        typer.Option(
            "--secure-aggregation/--no-secure-aggregation",
            help="pairwise-masked secure aggregation: the aggregator learns only the sum; every "
            "invited hospital must be registered with its key, and its own config must enable "
            "privacy.secagg too",
        ),
    ] = None,
    mlflow: Annotated[
        str | None,
        typer.Option(
            "--mlflow",
            help="with --out: also log parameters, per-round metrics and the final model to "
            "MLflow, as simulate --mlflow does: a tracking server URI, or a folder (local store)",
        ),
    ] = None,
    log_format: ServiceLogFormat = "json",
) -> None:
    """The aggregator loop for one federation (resumes from what the exchange holds)."""
    from fedsilo.engine.logs import configure_logging
    from fedsilo.engine.services import run_server

    configure_logging(check_format(log_format))
    federation = service_config(
        config,
        exchange,
        federation_id,
        None,
        endpoint_url,
        privacy_overrides(dp_epsilon, dp_delta, "client", secure_aggregation),
    )
    tracking = None
    if mlflow is not None:
        from fedsilo.ops.mlflow_sink import MlflowTracking

        tracking = MlflowTracking(mlflow)
    federation = run_server(federation, [s for s in (sites or "").split(",") if s], out, tracking)
    print_privacy(federation, federation.exchange.uri or "")


def client_run(
    site_id: Annotated[
        str, typer.Option("--site-id", envvar="FEDSILO_SITE_ID", help="this hospital's site id")
    ],
    config: ConfigOption = None,
    exchange: ExchangeOption = None,
    federation_id: FederationOption = None,
    data: Annotated[
        str | None, typer.Option(envvar="FEDSILO_DATA", help="prepared per-hospital folder")
    ] = None,
    endpoint_url: EndpointUrlOption = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="FEDSILO_STATE_DIR",
            help="this hospital's own folder for state kept across restarts (e.g. SCAFFOLD's "
            "control variate); on a persistent volume",
        ),
    ] = None,
    dp_target_epsilon: Annotated[
        float | None,
        typer.Option(envvar="FEDSILO_DP_TARGET_EPSILON", help="DP-SGD: this hospital's budget"),
    ] = None,
    dp_delta: Annotated[
        float | None, typer.Option(envvar="FEDSILO_DP_DELTA", help="DP-SGD delta (< 1/rows)")
    ] = None,
    dp_max_grad_norm: Annotated[
        float | None,
        typer.Option(envvar="FEDSILO_DP_MAX_GRAD_NORM", help="DP-SGD per-sample clip norm"),
    ] = None,
    site_policy: Annotated[
        Path | None,
        typer.Option(
            "--site-policy",
            help="this hospital's site policy (YAML/JSON; docs/site-policy.md), enforced on "
            "every round; env FEDSILO_SITE_POLICY (a path) or FEDSILO_SITE_POLICY_JSON (the "
            "document itself)",
        ),
    ] = None,
    log_format: ServiceLogFormat = "json",
) -> None:
    """The training loop of one hospital: answer every round until the final one."""
    from fedsilo.engine.logs import configure_logging
    from fedsilo.engine.services import run_client
    from fl_client.privacy_budget import require_state_dir, with_hospital_dp
    from fl_client.state_persistence import require_persistent_state
    from fl_core.site_policy import load_site_policy

    configure_logging(check_format(log_format))
    policy = load_site_policy(site_policy)  # a bad policy stops the hospital before it starts
    federation = service_config(config, exchange, federation_id, data, endpoint_url)
    federation = with_hospital_dp(
        federation,
        target_epsilon=dp_target_epsilon,
        delta=dp_delta,
        max_grad_norm=dp_max_grad_norm,
    )
    require_state_dir(federation, state_dir)
    require_persistent_state(federation)
    run_client(federation, site_id, state_dir, policy)

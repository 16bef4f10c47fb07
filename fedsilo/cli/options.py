"""Options and flag parsing shared by the simulate, server run and client run commands."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from fedsilo.engine.logs import LogFormat

ConfigOption = Annotated[Path | None, typer.Option("--config", help="YAML or TOML config file")]
DpEpsilonOption = Annotated[
    float | None,
    typer.Option(
        "--dp-epsilon",
        help="differential privacy: target epsilon (simulate: DP-SGD at every hospital unless "
        "--dp-level client; server run: DP-FedAvg at the aggregator)",
    ),
]
DpDeltaOption = Annotated[
    float | None,
    typer.Option("--dp-delta", help="differential privacy: delta (< 1/rows; client: < 1/sites)"),
]
SecAggOption = Annotated[
    bool | None,
    typer.Option(
        "--secure-aggregation/--no-secure-aggregation",
        help="pairwise-masked secure aggregation: the aggregator learns only the sum",
    ),
]
LogFormatOption = Annotated[str, typer.Option("--log-format", help="auto, json or console")]

ExchangeOption = Annotated[
    str | None,
    typer.Option(envvar="FEDSILO_EXCHANGE", help="s3://bucket/prefix or file://DIR"),
]
FederationOption = Annotated[
    str | None, typer.Option(envvar="FEDSILO_FEDERATION_ID", help="federation id")
]
ServiceLogFormat = Annotated[
    str, typer.Option("--log-format", envvar="FEDSILO_LOG_FORMAT", help="auto, json or console")
]


EndpointUrlOption = Annotated[
    str | None,
    typer.Option(envvar="FEDSILO_ENDPOINT_URL", help="S3-compatible endpoint (MinIO, moto)"),
]


def privacy_overrides(
    epsilon: float | None, delta: float | None, level: str, secure_aggregation: bool | None
) -> dict[str, Any]:
    """Dotted config keys for the privacy flags (None: the config file decides)."""
    section = "privacy.dp_sgd" if level == "sample" else "privacy.dp_fedavg"
    return {
        f"{section}.target_epsilon": epsilon,
        f"{section}.delta": delta,
        "privacy.secagg.enabled": secure_aggregation,
    }


def check_dp_level(value: str) -> str:
    if value not in ("sample", "client"):
        raise typer.BadParameter(f"--dp-level {value!r}: use sample or client")
    return value


def check_format(value: str) -> LogFormat:
    if value == "json":
        return "json"
    if value == "console":
        return "console"
    if value == "auto":
        return "auto"
    raise typer.BadParameter(f"--log-format {value!r}: use auto, json or console")

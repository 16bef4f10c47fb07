"""The ``fedsilo`` command line (typer). Expected faults print one line and exit non-zero."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedsilo.calibration_view import calibration_table
from fedsilo.logs import LogFormat, configure_logging
from fedsilo.strategy_fit import planned_hospitals
from fl_core.config import FederationConfig, load_config
from fl_core.errors import FedsiloError
from fl_core.exchange.manifests import Decision, GlobalManifest

app = typer.Typer(
    name="fedsilo",
    no_args_is_help=True,
    add_completion=False,
    help="Cross-silo federated learning for hospitals on AWS.",
)
server_app = typer.Typer(no_args_is_help=True, help="The coordinating centre's aggregator.")
client_app = typer.Typer(no_args_is_help=True, help="A hospital's training loop.")
app.add_typer(server_app, name="server")
app.add_typer(client_app, name="client")

try:  # the data commands arrive with the eICU data layer
    from fedsilo.cli_data import data_app

    app.add_typer(data_app, name="data", help="eICU-layout tables and per-hospital folders.")
except ImportError:  # pragma: no cover
    pass

from fedsilo.onboard_cli import offboard_command, onboard_app  # noqa: E402

app.add_typer(onboard_app, name="onboard")
app.command("offboard")(offboard_command)

from fedsilo.ops_cli import ledger_app, report_command, status_command  # noqa: E402

app.add_typer(ledger_app, name="ledger")
app.command("status")(status_command)
app.command("report")(report_command)

console = Console(stderr=True)
stdout = Console()

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


class _ProgressEvents:
    """Draws a progress bar per round and prints each round's row when it is known."""

    def __init__(self, config: FederationConfig) -> None:
        from fedsilo.simulation import SimulationEvents

        self.config = config
        events = self

        class Events(SimulationEvents):
            def round_opened(self, manifest: GlobalManifest) -> None:
                events.opened(manifest)

            def decided(self, round_index: int, decision: Decision) -> None:
                events.progress.advance(events.task)

            def row_ready(self, row: dict[str, Any]) -> None:
                events.print_row(row)

        self.events = Events(config.rounds)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("sites"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task("waiting", total=1, visible=False)

    def opened(self, manifest: GlobalManifest) -> None:
        self.progress.remove_task(self.task)
        label = (
            f"round {manifest.round_index}/{self.config.rounds}"
            if manifest.task == "train"
            else "final evaluation"
        )
        self.task = self.progress.add_task(label, total=len(manifest.invited_sites))

    def print_row(self, row: dict[str, Any]) -> None:
        self.progress.console.print(
            f"round {row['round']:>3}  AUROC {_fmt(row['auroc'])}  AUPRC {_fmt(row['auprc'])}  "
            f"loss {_fmt(row['loss'])}  sites {row['sites_accepted']}/"
            f"{row['sites_rejected']}  {row['seconds']:.1f}s",
            soft_wrap=True,
            highlight=False,
        )


def _fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:.4f}"


def metrics_table(rows: list[dict[str, Any]]) -> Table:
    """Per-round metrics, with the yardsticks on the same test stays (APACHE IVa, Bayes)."""
    references = sorted({name for row in rows for name in row.get("reference_auroc", {})})
    title = "federated rounds" + (
        f" (yardstick AUROC on the same stays: {', '.join(references)})" if references else ""
    )
    table = Table(title=title, caption="acc/rej: updates accepted/rejected; s: round seconds")
    for column in ("round", "AUROC", "AUPRC", "loss", "acc", "rej", "s"):
        table.add_column(column, justify="right")
    for name in references:
        table.add_column(name, justify="right")
    for row in rows:
        yardsticks = row.get("reference_auroc", {})
        table.add_row(
            str(row["round"]),
            _fmt(row["auroc"]),
            _fmt(row["auprc"]),
            _fmt(row["loss"]),
            str(row["sites_accepted"]),
            str(row["sites_rejected"]),
            f"{row['seconds']:.2f}",
            *(_fmt(yardsticks.get(name)) for name in references),
        )
    return table


@app.command()
def simulate(
    config: ConfigOption = None,
    hospitals: Annotated[int | None, typer.Option(help="synthetic hospitals")] = None,
    data: Annotated[Path | None, typer.Option(help="prepared per-hospital folders")] = None,
    twin: Annotated[
        bool, typer.Option("--twin", help="the eICU-shaped twin, read by the real reader")
    ] = False,
    rounds: Annotated[int | None, typer.Option(help="training rounds")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of data, model and training")] = None,
    out: Annotated[Path, typer.Option(help="folder that receives the run folder")] = Path("runs"),
    exchange: Annotated[str | None, typer.Option(help="file://DIR or s3://bucket/prefix")] = None,
    endpoint_url: Annotated[str | None, typer.Option(help="S3-compatible endpoint")] = None,
    engine: Annotated[str | None, typer.Option(help="process or mpi")] = None,
    strategy: Annotated[str | None, typer.Option(help="aggregation strategy")] = None,
    workers: Annotated[int | None, typer.Option(help="hospital worker processes")] = None,
    min_sites: Annotated[int | None, typer.Option(help="quorum per round")] = None,
    app_ref: Annotated[
        str | None, typer.Option("--app", help="FILE.py:NAME of a FederatedApp")
    ] = None,
    run_id: Annotated[str | None, typer.Option(help="name of the run folder")] = None,
    tensorboard: Annotated[
        Path | None, typer.Option(help="also write per-round metrics as TensorBoard events here")
    ] = None,
    dp_epsilon: DpEpsilonOption = None,
    dp_delta: DpDeltaOption = None,
    dp_level: Annotated[
        str,
        typer.Option(
            "--dp-level",
            help="sample: DP-SGD at each hospital (protects patients); client: DP-FedAvg at "
            "the aggregator (protects hospitals)",
        ),
    ] = "sample",
    secure_aggregation: SecAggOption = None,
    log_format: LogFormatOption = "auto",
    log_level: Annotated[str, typer.Option(help="log level")] = "WARNING",
) -> None:
    """Train a whole federation on this machine (hospitals in worker processes)."""
    if engine != "mpi":
        from fedsilo.worker_pool import worker_context

        worker_context()  # the fork server imports torch on one core while we do on the other
    overrides: dict[str, Any] = {
        "rounds": rounds,
        "seed": seed,
        "data.synthetic.hospitals": hospitals,
        "exchange.uri": exchange,
        "exchange.endpoint_url": endpoint_url,
        "simulation.engine": engine,
        "simulation.workers": workers,
        "strategy.name": strategy,
        "round.min_sites": min_sites,
        **privacy_overrides(dp_epsilon, dp_delta, _check_dp_level(dp_level), secure_aggregation),
    }
    if data is not None:
        overrides.update({"data.source": "prepared", "data.path": str(data)})
    elif twin:
        overrides["data.source"] = "twin"
        overrides["data.twin.hospitals"] = overrides.pop("data.synthetic.hospitals")
    federation = load_config(config, overrides)
    federation = _fit_strategy(federation, planned_hospitals(federation))
    configure_logging(_check_format(log_format), log_level)
    if federation.simulation.engine == "mpi":
        from fedsilo.mpi_launch import run_unless_aggregator

        mpi_options = {"--app": app_ref, "--log-format": log_format, "--log-level": log_level}
        mpi_options["--tensorboard"] = None if tensorboard is None else str(tensorboard)
        if run_unless_aggregator(federation, out, run_id=run_id, options=mpi_options):
            return  # re-launched under mpirun, or this rank hosted hospitals
        from fedsilo.mpi_engine import simulate as run_simulation
    else:
        from fedsilo.gc_policy import start_up

        with start_up():  # torch, after the config is known to be good
            from fedsilo.simulation import simulate as run_simulation
    ui = _ProgressEvents(federation)
    from fedsilo.tensorboard_sink import with_tensorboard

    events = ui.events if tensorboard is None else with_tensorboard(tensorboard, ui.events)
    console.print(
        f"[bold]fedsilo[/] federation [cyan]{federation.federation_id}[/]: "
        f"{federation.rounds} rounds, seed {federation.seed}"
    )
    with ui.progress:
        result = run_simulation(
            federation,
            out,
            app_ref=app_ref,
            events=events,
            log_format=_check_format(log_format),
            log_level=log_level,
            run_id=run_id,
        )
    stdout.print(metrics_table(result.rows))
    calibration = calibration_table(result.rows)
    if calibration is not None:
        stdout.print(calibration)
    _print_personalization(federation, result.exchange_uri)
    _print_privacy(federation, result.exchange_uri)
    stdout.print(f"run folder: {result.run_dir}  ({result.seconds:.1f} s)")
    stdout.print(f"  metrics:  {result.run_dir / 'metrics.jsonl'}")
    stdout.print(f"  model:    {result.run_dir / 'model.safetensors'}")
    stdout.print(f"  exchange: {result.exchange_uri}")


def _print_personalization(federation: FederationConfig, exchange_uri: str) -> None:
    """Per-hospital global vs fine-tuned AUROC, when the run fine-tuned (personalization)."""
    if federation.personalization.finetune_epochs == 0:
        return
    from fedsilo.personalization_report import simulation_summary_lines
    from fl_core.exchange.protocol import Exchange
    from fl_core.exchange.uri import open_store

    store = open_store(exchange_uri, endpoint_url=federation.exchange.endpoint_url)
    exchange = Exchange(store, federation.federation_id)
    for line in simulation_summary_lines(exchange, federation.rounds):
        stdout.print(line, highlight=False, markup=False, soft_wrap=True)


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


def _check_dp_level(value: str) -> str:
    if value not in ("sample", "client"):
        raise typer.BadParameter(f"--dp-level {value!r}: use sample or client")
    return value


def _fit_strategy(federation: FederationConfig, hospitals: int | None) -> FederationConfig:
    """The strategy's quorum fitted to the federation; each change is said on stderr."""
    from fedsilo.strategy_fit import fit_strategy

    fitted, notes = fit_strategy(federation, hospitals)
    for note in notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    return fitted


def _print_privacy(federation: FederationConfig, exchange_uri: str) -> None:
    """Epsilon spent per hospital (DP-SGD) and by the model (DP-FedAvg), when DP ran.

    Read from the results, not the config: under ``server run`` the hospitals choose their
    own DP-SGD (``client run --dp-target-epsilon``), which the aggregator's config never says.
    """
    from fedsilo.privacy_report import epsilon_summary, read_results
    from fl_core.exchange.protocol import Exchange
    from fl_core.exchange.uri import open_store

    store = open_store(exchange_uri, endpoint_url=federation.exchange.endpoint_url)
    for line in epsilon_summary(read_results(Exchange(store, federation.federation_id))):
        stdout.print(line, highlight=False, markup=False, soft_wrap=True)


def _check_format(value: str) -> LogFormat:
    if value == "json":
        return "json"
    if value == "console":
        return "console"
    if value == "auto":
        return "auto"
    raise typer.BadParameter(f"--log-format {value!r}: use auto, json or console")


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


def _service_config(
    config: Path | None,
    exchange: str | None,
    federation_id: str | None,
    data: str | None,
    endpoint_url: str | None = None,
    extra: dict[str, Any] | None = None,
) -> FederationConfig:
    overrides: dict[str, Any] = {
        "exchange.uri": exchange,
        "federation_id": federation_id,
        "exchange.endpoint_url": endpoint_url,
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


@server_app.command("run")
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
    log_format: ServiceLogFormat = "json",
) -> None:
    """The aggregator loop for one federation (resumes from what the exchange holds)."""
    from fedsilo.services import run_server

    configure_logging(_check_format(log_format))
    federation = _service_config(
        config,
        exchange,
        federation_id,
        None,
        endpoint_url,
        privacy_overrides(dp_epsilon, dp_delta, "client", secure_aggregation),
    )
    federation = run_server(federation, [s for s in (sites or "").split(",") if s], out)
    _print_privacy(federation, federation.exchange.uri or "")


@client_app.command("run")
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
    log_format: ServiceLogFormat = "json",
) -> None:
    """The training loop of one hospital: answer every round until the final one."""
    from fedsilo.services import run_client
    from fl_client.privacy_budget import require_state_dir, with_hospital_dp

    configure_logging(_check_format(log_format))
    federation = _service_config(config, exchange, federation_id, data, endpoint_url)
    federation = with_hospital_dp(
        federation,
        target_epsilon=dp_target_epsilon,
        delta=dp_delta,
        max_grad_norm=dp_max_grad_norm,
    )
    require_state_dir(federation, state_dir)
    run_client(federation, site_id, state_dir)


def _run_app() -> int:
    """The command's exit code: expected faults become one line and their exit code."""
    try:
        returned = app(standalone_mode=False)
    except FedsiloError as err:
        message = str(err).strip()
        console.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
        return err.exit_code
    except typer.Abort:
        console.print("aborted")
        return 130
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    except typer.TyperException as err:  # usage errors (typer's own click) carry their exit code
        show = getattr(err, "show", None)
        if show is None:
            console.print(f"error: {err.format_message()}")
        else:
            show()
        return err.exit_code
    return returned if isinstance(returned, int) else 0  # typer.Exit(code) arrives as a return


def main() -> None:
    """Console entry point; the process leaves without tearing torch down (``process_exit``)."""
    from fedsilo.process_exit import exit_process

    try:
        code = _run_app()
    except SystemExit as done:  # a sys.exit in a command or a library (typer.Exit returns)
        if done.code is None or isinstance(done.code, int):
            code = done.code or 0
        else:
            print(done.code, file=sys.stderr)
            code = 1
    exit_process(code)


if __name__ == "__main__":
    main()

"""``fedsilo simulate``: a whole federation on this machine, with a progress bar per round."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedsilo.cli.options import (
    ConfigOption,
    DpDeltaOption,
    DpEpsilonOption,
    LogFormatOption,
    SecAggOption,
    check_dp_level,
    check_format,
    privacy_overrides,
)
from fedsilo.cli.output import (
    console,
    fit_strategy,
    fmt,
    metrics_table,
    print_personalisation,
    print_privacy,
    printed_exchange,
    stdout,
)
from fedsilo.cli.simulate_checks import check_data_options, check_dp_sgd_delta
from fedsilo.cli.simulate_ending import (
    launch_under_mpirun,
    plain_output_for_ranks,
    stop_interrupted,
)
from fedsilo.cli.simulate_policies import simulated_policies

if TYPE_CHECKING:
    from fedsilo.engine.federation import SimulationEvents
    from fedsilo.engine.metrics_row import MetricsRow
    from fedsilo.ops.mlflow_sink import MlflowEvents
    from fl_core.config import FederationConfig
    from fl_core.exchange.manifests import Decision, GlobalManifest


PROGRESS_REFRESH_PER_S = 4


class ProgressEvents:
    """Draws a progress bar per round and prints each round's row when it is known."""

    def __init__(self, config: FederationConfig) -> None:
        from fedsilo.engine.federation import SimulationEvents

        self.config = config
        events = self

        class Events(SimulationEvents):
            def round_opened(self, manifest: GlobalManifest) -> None:
                events.opened(manifest)

            def decided(self, round_index: int, decision: Decision) -> None:
                events.progress.advance(events.task)

            def row_ready(self, row: MetricsRow) -> None:
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
            # a bar of answers needs no more than rich's own default of 4 redraws a second
            # (Progress's 10 take CPU from the aggregator's process for the whole run),
            # and where the console is not a terminal a transient bar shows nothing at all
            refresh_per_second=PROGRESS_REFRESH_PER_S,
            disable=not console.is_terminal,
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

    def print_row(self, row: MetricsRow) -> None:
        self.progress.console.print(
            f"round {row.round:>3}  AUROC {fmt(row.auroc)}  AUPRC {fmt(row.auprc)}  "
            f"loss {fmt(row.loss)}  sites {row.sites_accepted}/"
            f"{row.sites_rejected}  {row.seconds:.1f}s",
            soft_wrap=True,
            highlight=False,
        )


def simulate_command(
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
    run_id: Annotated[
        str | None,
        typer.Option(
            help="name of the run folder; an interrupted run's id (same options) resumes it"
        ),
    ] = None,
    tensorboard: Annotated[
        Path | None,
        typer.Option(
            help="also write per-round metrics as TensorBoard events here (a subfolder per run)"
        ),
    ] = None,
    mlflow: Annotated[
        str | None,
        typer.Option(
            "--mlflow",
            help="also log parameters, per-round metrics and the final model to MLflow: a "
            "tracking server URI, or a folder (file: URI) for a local store",
        ),
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
    site_policy: Annotated[
        list[Path] | None,
        typer.Option(
            "--site-policy",
            help="a hospital site policy (YAML/JSON, docs/site-policy.md) enforced as `client "
            "run` does; repeatable: a policy whose site_id is a simulated hospital is that "
            "hospital's, one naming none applies to every hospital without its own",
        ),
    ] = None,
    log_format: LogFormatOption = "auto",
    log_level: Annotated[str, typer.Option(help="log level")] = "WARNING",
) -> None:
    """Train a whole federation on this machine (hospitals in worker processes)."""
    from fedsilo.engine.logs import configure_logging
    from fedsilo.engine.run_folder import new_run_id
    from fedsilo.engine.strategy_fit import planned_hospitals
    from fedsilo.ops.calibration_view import calibration_table
    from fl_core.config import load_config

    check_data_options(hospitals=hospitals, data=data, twin=twin)
    if engine != "mpi":
        from fedsilo.engine.worker_pool import worker_context

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
        **privacy_overrides(dp_epsilon, dp_delta, check_dp_level(dp_level), secure_aggregation),
    }
    if data is not None:
        overrides.update({"data.source": "prepared", "data.path": str(data)})
    elif twin:
        overrides["data.source"] = "twin"
        overrides["data.twin.hospitals"] = overrides.pop("data.synthetic.hospitals")
    federation = load_config(config, overrides)
    federation = fit_strategy(federation, planned_hospitals(federation))
    policies = simulated_policies(site_policy or [], federation)
    configure_logging(check_format(log_format), log_level)
    run_id = run_id or new_run_id(federation)  # known here, so a failure can mark its folder
    if federation.simulation.engine == "mpi":
        plain_output_for_ranks()

        mpi_options = {"--app": app_ref, "--log-format": log_format, "--log-level": log_level}
        mpi_options["--tensorboard"] = None if tensorboard is None else str(tensorboard)
        mpi_options["--mlflow"] = mlflow
        if launch_under_mpirun(federation, out, run_id, mpi_options):
            return  # re-launched under mpirun, or this rank hosted hospitals
        from fedsilo.engine.mpi_engine import simulate as run_simulation
    else:
        from fedsilo.engine.gc_policy import start_up

        with start_up():  # torch, after the config is known to be good
            from fedsilo.engine.process_engine import simulate as run_simulation
    check_dp_sgd_delta(federation)
    ui = ProgressEvents(federation)
    from fedsilo.ops.tensorboard_sink import with_tensorboard

    events: SimulationEvents = ui.events
    if tensorboard is not None:
        events = with_tensorboard(tensorboard / run_id, events)
    tracking: MlflowEvents | None = None
    if mlflow is not None:
        from fedsilo.ops.mlflow_sink import with_mlflow

        events = tracking = with_mlflow(mlflow, federation, run_id, events)
    console.print(
        f"[bold]fedsilo[/] federation [cyan]{federation.federation_id}[/]: "
        f"{federation.rounds} rounds, seed {federation.seed}",
        highlight=False,
    )
    run_dir = out / run_id
    try:
        with ui.progress:
            result = run_simulation(
                federation,
                out,
                app_ref=app_ref,
                events=events,
                log_format=check_format(log_format),
                log_level=log_level,
                run_id=run_id,
                site_policies=policies,
            )
    except KeyboardInterrupt:
        if tracking is not None:
            tracking.stop("KILLED")
        stop_interrupted(federation, run_dir)
    except Exception as err:
        from fedsilo.engine.run_folder import record_outcome

        record_outcome(run_dir, "failed", str(err) or type(err).__name__)
        if tracking is not None:
            tracking.stop("FAILED")
        raise
    if tracking is not None:
        tracking.finish(result.run_dir, result.rows)
    stdout.print(metrics_table(result.rows))
    calibration = calibration_table(result.rows)
    if calibration is not None:
        stdout.print(calibration)
    print_personalisation(federation, result.exchange_uri)
    print_privacy(federation, result.exchange_uri)
    stdout.print(f"run folder: {result.run_dir}  ({result.seconds:.1f} s)", highlight=False)
    stdout.print(f"  metrics:  {result.run_dir / 'metrics.jsonl'}", highlight=False)
    stdout.print(f"  model:    {result.run_dir / 'model.safetensors'}", highlight=False)
    stdout.print(
        f"  exchange: {printed_exchange(result.exchange_uri)}", highlight=False, soft_wrap=True
    )
    if tracking is not None:
        stdout.print(f"  mlflow:   run {tracking.run_id} at {mlflow}", highlight=False)

"""``fedsilo data``: write a synthetic eICU twin, or prepare per-hospital folders.

``synth`` writes eICU-layout tables; ``prepare`` reads eICU tables (real or twin) or any table
with a site column and writes the folders ``fedsilo simulate --data`` trains on. Bad input is a
``ConfigError`` (exit 2) whose message names the file and the column.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedsilo.cli.data_federation import profile_command, schema_command
from fl_core.data.defaults import EICU_MIN_STAYS, TABLE_MIN_STAYS

if TYPE_CHECKING:  # numpy, pandas and torch: only the command that needs one pays for it
    from rich.progress import Progress, TaskID

    from fedsilo.ops.evaluation_summary import EvaluationSummary, HospitalVerdicts
    from fl_core.data.prepared import PreparedSchema

data_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="eICU-layout tables and per-hospital folders.",
)
console = Console()
data_app.command("schema")(schema_command)
data_app.command("profile")(profile_command)

OutOption = Annotated[Path, typer.Option("--out", help="output folder (new or empty)")]
SeedOption = Annotated[int, typer.Option("--seed", help="random seed (twin draw or split)")]
OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="replace a previous output in --out")
]


@data_app.command("synth")
def synth_command(
    out: OutOption,
    hospitals: Annotated[int, typer.Option("--hospitals", help="number of hospitals")] = 208,
    stays: Annotated[int, typer.Option("--stays", help="ICU unit stays in all")] = 200_000,
    seed: SeedOption = 0,
    overwrite: OverwriteOption = False,
) -> None:
    """Write a synthetic twin of eICU-CRD v2.0 (same four tables) plus its true-risk file."""
    import numpy as np

    from fl_core.data.eicu.synth import synthesise  # pandas: only this command pays for it

    summary = synthesise(out, hospitals=hospitals, stays=stays, seed=seed, overwrite=overwrite)
    sizes = np.array(summary.sizes)
    mortality = np.array(summary.hospital_mortality)
    table = Table(title=f"synthetic eICU twin -> {out}", show_header=False)
    table.add_row("hospitals", str(summary.hospitals))
    table.add_row("unit stays", str(summary.stays))
    table.add_row("in-hospital mortality", f"{summary.mortality:.1%}")
    table.add_row(
        "stays per hospital",
        f"min {sizes.min()}, median {np.median(sizes):.0f}, max {sizes.max()}; "
        f"{int((sizes < 100).sum())} under 100, {int((sizes >= 1000).sum())} with 1000+",
    )
    big = mortality[sizes >= 100]
    if big.size:
        table.add_row(
            "mortality by hospital (100+ stays)",
            f"{np.percentile(big, 10):.1%} to {np.percentile(big, 90):.1%} (10th-90th pct)",
        )
    console.print(table)


@data_app.command("prepare")
def prepare_command(
    out: OutOption,
    eicu_dir: Annotated[
        Path | None, typer.Option("--eicu-dir", help="folder of eICU-CRD v2.0 CSV tables")
    ] = None,
    csv: Annotated[
        Path | None, typer.Option("--csv", help="your own table (.csv, .csv.gz, .parquet)")
    ] = None,
    site_column: Annotated[
        str | None, typer.Option("--site-column", help="column naming the hospital")
    ] = None,
    label_column: Annotated[
        str | None, typer.Option("--label-column", help="column with the 0/1 outcome")
    ] = None,
    positive_label: Annotated[
        str | None, typer.Option("--positive-label", help="label value that means the event")
    ] = None,
    delimiter: Annotated[
        str | None,
        typer.Option("--delimiter", help="--csv field separator (default: read from the header)"),
    ] = None,
    min_stays: Annotated[
        int | None,
        typer.Option(
            "--min-stays",
            help=f"keep out hospitals with fewer rows (default {EICU_MIN_STAYS} for eICU, "
            f"{TABLE_MIN_STAYS} for --csv)",
        ),
    ] = None,
    seed: SeedOption = 0,
    overwrite: OverwriteOption = False,
    features: Annotated[
        str,
        typer.Option(
            "--features",
            help="eICU: apache (the core set and APACHE IVa's prediction, the default), core, "
            "or full (also the apachePredVar admission items, for data evaluate --candidate)",
        ),
    ] = "apache",
) -> None:
    """Write one folder per hospital (stratified train/valid/test Parquet) plus schema.json."""
    from fl_core.errors import ConfigError

    if (eicu_dir is None) == (csv is None):
        raise ConfigError("give exactly one of --eicu-dir DIR or --csv FILE")
    # the preparers import pandas: only this command pays for it
    from fl_core.data.eicu.prepare import prepare_eicu
    from fl_core.data.tabular import prepare_table

    if eicu_dir is not None:
        for option, value in (("--site-column", site_column), ("--label-column", label_column)):
            if value is not None:
                raise ConfigError(f"{option} applies to --csv only; eICU uses hospitalid")
        result = prepare_eicu(
            eicu_dir,
            out,
            min_stays=EICU_MIN_STAYS if min_stays is None else min_stays,
            seed=seed,
            overwrite=overwrite,
            feature_set=features,
        )
        _print_summary(result.schema, out)
        report = result.cohort.report
        console.print(
            f"cohort: {report.cohort_stays} of {report.stays_read} stays "
            f"({report.cohort_deaths} deaths); excluded {report.excluded}; impossible rows "
            f"dropped {report.impossible_dropped}; implausible values masked {report.masked}"
        )
        return
    assert csv is not None
    if features != "apache":
        raise ConfigError("--features applies to --eicu-dir only")
    if site_column is None or label_column is None:
        raise ConfigError("--csv needs --site-column COL and --label-column COL")
    table = prepare_table(
        csv,
        out,
        site_column=site_column,
        label_column=label_column,
        min_stays=TABLE_MIN_STAYS if min_stays is None else min_stays,
        seed=seed,
        positive_label=positive_label,
        overwrite=overwrite,
        delimiter=delimiter,
    )
    _print_summary(table.schema, out)
    tab = table.report
    how = "given" if positive_label is not None else "detected"
    console.print(f"label: {label_column}, event = {tab.positive_label!r} ({how})", markup=False)
    if tab.delimiter is not None:
        given = "given" if delimiter is not None else "read from the header"
        console.print(f"delimiter: {tab.delimiter!r} ({given})", markup=False)
    console.print(
        f"rows: {tab.rows_read} read; dropped {tab.dropped_rows}; "
        f"{len(tab.numeric)} numeric and {len(tab.categorical)} categorical columns"
        + (f"; columns left out: {tab.dropped_columns}" if tab.dropped_columns else "")
    )


@data_app.command("evaluate")
def evaluate_command(
    data: Annotated[Path, typer.Option("--data", help="prepared per-hospital folders")],
    out: Annotated[
        Path,
        typer.Option("--out", help="folder for summary.json, evaluation.html and the folds' work"),
    ],
    config: Annotated[
        Path | None, typer.Option("--config", help="federation config (rounds, training)")
    ] = None,
    folds: Annotated[int, typer.Option("--folds", min=2, max=20, help="folds per hospital")] = 5,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="fold deals")] = 1,
    seed: SeedOption = 0,
    local_only: Annotated[
        bool,
        typer.Option(
            "--local-only/--no-local-only",
            help="also train each site alone: the per-hospital view (federated vs alone)",
        ),
    ] = True,
    keep: Annotated[
        bool, typer.Option("--keep", help="keep the fold folders and run folders in --out")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="print summary.json instead of the tables")
    ] = False,
    candidate: Annotated[
        list[str] | None,
        typer.Option(
            "--candidate",
            help="a named model to evaluate (repeat for several; default: every column of "
            "--data, as simulate trains): core, logistic, rich, apache_input, apache_skip, "
            "apache_customised, apache_customised_logistic, rich_apache_customised, "
            "rich_apache_customised_logistic, rich_apache_skip, rich_apache, "
            "rich_apache_logistic; the first is the one the per-hospital verdict is about",
        ),
    ] = None,
) -> None:
    """Cross-validate a federation per hospital beside pooled training and the yardsticks.

    Small hospitals (eICU demo: ~11 stays, one death or none) leave a held-out test split
    with a handful of deaths; k folds dealt inside every hospital test each stay once.
    Progress goes to stderr; the result stays in --out as summary.json and evaluation.html.
    """
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from fedsilo.engine.logs import configure_logging
    from fedsilo.ops.evaluate import STAYS_FILE, CrossValidation, cross_validate
    from fedsilo.ops.evaluation_candidates import (
        Candidate,
        candidate_config,
        candidates_named,
    )
    from fedsilo.ops.evaluation_summary import candidates_text, summarise, write_summary
    from fedsilo.ops.hospital_verdict import verdict_from_file
    from fl_core.config import load_config
    from fl_core.errors import ConfigError

    configure_logging("auto", "WARNING")
    if not (data / "schema.json").is_file():
        raise ConfigError(f"--data {data}: no schema.json; run `fedsilo data prepare` first")
    federation = load_config(config)
    chosen = candidates_named(candidate or [])
    started = time.monotonic()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    # a fold takes minutes: estimate speed over a quarter hour, not rich's default 30 s
    results: list[tuple[Candidate, CrossValidation]] = []
    with Progress(*columns, console=Console(stderr=True), speed_estimate_period=900) as progress:
        bars = EvaluationBars(progress, folds * repeats * len(chosen))
        for index, preset in enumerate(chosen):
            primary = index == 0  # its work stays in --out; the verdict is about it
            results.append(
                (
                    preset,
                    cross_validate(
                        data,
                        out if primary else out / "candidates" / preset.name,
                        candidate_config(federation, preset),
                        folds=folds,
                        repeats=repeats,
                        split_seed=seed,
                        local_only=local_only and primary,
                        progress=bars,
                        keep=keep,
                        feature_groups=preset.feature_groups,
                        label_prefix="" if len(chosen) == 1 else f"{preset.name}-",
                    ),
                )
            )
    cv = results[0][1]
    bins = federation.evaluation.histogram_bins
    verdicts = verdict_from_file(out / STAYS_FILE, bins) if local_only else None
    summary = summarise(
        cv,
        data=data,
        rounds=federation.rounds,
        local_only=local_only,
        seconds=time.monotonic() - started,
        kept=keep,
        verdicts=verdicts,
        candidates=results,
        training=federation.training,
    )
    json_path, page_path = write_summary(summary, out, verdicts)
    if as_json:
        print(json_path.read_text(), end="")
        return
    console.print(cross_validation_table(summary))
    if summary.chosen_by_validation:
        console.print(candidates_text(summary), markup=False)
    if summary.hospital_verdicts is not None:
        console.print(hospital_verdict_table(summary.hospital_verdicts))
    console.print(
        f"{summary.test_stays} test stays, {summary.test_deaths} deaths over all folds in "
        f"{summary.seconds:.0f} s; kept in {json_path} and {page_path}"
        + ("; fold and run folders kept in --out" if keep else "")
    )


class EvaluationBars:
    """Two bars: the whole cross-validation and the running fold's federation.

    Both advance with every round, so each has an ETA from the first round on; the whole
    one counts the folds done in its description.
    """

    def __init__(self, progress: Progress, federations: int) -> None:
        self.progress = progress
        self.federations = federations
        self.finished = 0
        self.overall = progress.add_task(self._overall_text(), total=None)
        self.current: TaskID | None = None
        self.label = ""

    def _overall_text(self) -> str:
        return f"cross-validation: {self.finished} of {self.federations} folds done"

    def federation_started(self, label: str, steps: int) -> None:
        self.label = label
        if self.finished == 0 and self.current is None:  # the first fold sets the whole's size
            self.progress.update(self.overall, total=self.federations * steps)
        self.current = self.progress.add_task(f"fold {label}: training", total=steps)

    def advance(self, done: str) -> None:
        self.progress.update(self.overall, advance=1)
        if self.current is not None:
            self.progress.update(self.current, advance=1, description=f"fold {self.label}: {done}")

    def federation_finished(self, label: str) -> None:
        if self.current is not None:
            self.progress.remove_task(self.current)
            self.current = None
        self.finished += 1
        self.progress.update(self.overall, description=self._overall_text())


def _cell(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def cross_validation_table(summary: EvaluationSummary) -> Table:
    """AUROC over folds, and out-of-fold calibration, of each model and yardstick."""
    table = Table(
        title=f"{summary.folds}-fold cross-validation per hospital x {summary.repeats}",
        caption="AUROC: mean +- sd over the folds, and over every stay out of fold (OOF); "
        "calibration out of fold: Brier score, expected calibration error (ECE), Cox "
        "intercept (0 when calibrated) and slope (1); APACHE's stays: AUROC mean over the folds "
        "on the stays APACHE IVa scores, like for like",
    )
    several = len(summary.candidates) > 1
    like_for_like = any(m.auroc_on_apache_stays is not None for m in summary.models)
    headers = ("model", "AUROC", "OOF", "Brier", "ECE", "icpt", "slope")
    extra = (*(("val. loss",) if several else ()), *(("APACHE's stays",) if like_for_like else ()))
    for column in (*headers, *extra):
        table.add_column(column, justify="left" if column == "model" else "right")
    for model in summary.models:
        loss = (_cell(model.validation_log_loss),) if several else ()
        if like_for_like:
            loss = (*loss, _cell(model.auroc_on_apache_stays))
        table.add_row(
            model.model,
            f"{_cell(model.auroc_mean)} +- {_cell(model.auroc_sd, 3)}"
            if model.folds_scored
            else "n/a",
            _cell(model.out_of_fold_auroc),
            _cell(model.brier),
            _cell(model.ece),
            _cell(model.intercept, 2),
            _cell(model.slope, 2),
            *loss,
        )
    return table


def hospital_verdict_table(verdicts: HospitalVerdicts) -> Table:
    """The evaluable hospitals: federated against their own model, out of fold."""
    from fedsilo.ops.evaluation_summary import difference_text, verdict_headline

    table = Table(
        title="each hospital's stays out of fold: federated vs a model of its own (log-loss)",
        caption=verdict_headline(verdicts),
    )
    columns = ("hospital", "stays", "deaths", "federated", "own", "APACHE", "fed. - own (95% CI)")
    for column in (*columns, "verdict"):
        table.add_column(column, justify="left" if column in ("hospital", "verdict") else "right")
    for row in verdicts.rows:
        if row.log_loss_difference is None:
            continue
        table.add_row(
            row.site_id,
            str(row.stays),
            str(row.deaths),
            _cell(row.federated_log_loss, 3),
            _cell(row.own_log_loss, 3),
            _cell(row.apache_log_loss, 3),
            difference_text(row.log_loss_difference),
            row.verdict,
        )
    return table


def _print_summary(schema: PreparedSchema, out: Path) -> None:
    rows = {name: sum(s.rows[name] for s in schema.sites) for name in ("train", "valid", "test")}
    positives = sum(sum(s.positives.values()) for s in schema.sites)
    small = [s for s in schema.sites if s.note and s.note.startswith("too small")]
    table = Table(title=f"prepared {schema.kind} folders -> {out}", show_header=False)
    table.add_row("sites written", str(len(schema.sites)))
    table.add_row(
        "rows train / valid / test", f"{rows['train']} / {rows['valid']} / {rows['test']}"
    )
    table.add_row("positives", f"{positives} ({positives / max(sum(rows.values()), 1):.1%})")
    table.add_row("features", str(len(schema.features)))
    table.add_row("reference scores", ", ".join(schema.reference_scores) or "none")
    table.add_row(
        "too small to split",
        f"{len(small)} sites keep all rows in train (< {schema.split.min_stays_to_split} rows)",
    )
    table.add_row("sites kept out", str(len(schema.excluded_sites)))
    console.print(table)
    for excluded in schema.excluded_sites[:10]:
        console.print(f"  kept out {excluded.source_value}: {excluded.reason}")
    if len(schema.excluded_sites) > 10:
        console.print(f"  ... and {len(schema.excluded_sites) - 10} more (see schema.json)")


def run_data_command(args: list[str]) -> int:
    """Run ``fedsilo data ARGS`` and return the exit code; an expected fault is one line.

    ``fedsilo.cli`` does the same for every command; this guard lets the data commands be
    run and tested on their own.
    """
    from fl_core.errors import FedsiloError

    errors = Console(stderr=True, soft_wrap=True)
    try:
        data_app(args, standalone_mode=False)
    except FedsiloError as err:
        errors.print(f"error: {err}", markup=False, highlight=False)
        return err.exit_code
    except typer.TyperException as err:  # usage errors: unknown or missing option
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        errors.print(f"error: {message}", markup=False, highlight=False)
        return int(getattr(err, "exit_code", 2))
    return 0

"""Operator commands: ``fedsilo ledger verify``, ``fedsilo status``, ``fedsilo report``.

They read the exchange (a folder or S3) and the run folder; they never write to the exchange.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from fedsilo.cli.output import console

if TYPE_CHECKING:  # the exchange imports pydantic and numpy: the commands import it, not --help
    from fl_core.exchange.protocol import Exchange

ledger_app = typer.Typer(no_args_is_help=True, help="The audit ledger of a federation.")

stdout = Console()
if not stdout.is_terminal:  # a log or a pipe: wide enough that the status table never wraps
    stdout = Console(width=160)

FederationArg = Annotated[
    str, typer.Option("--federation", envvar="FEDSILO_FEDERATION_ID", help="federation id")
]
ExchangeArg = Annotated[
    str,
    typer.Option(
        "--exchange", envvar="FEDSILO_EXCHANGE", help="s3://bucket/prefix, file://DIR or a folder"
    ),
]
EndpointArg = Annotated[
    str | None,
    typer.Option("--endpoint-url", envvar="FEDSILO_ENDPOINT_URL", help="S3-compatible endpoint"),
]
JsonArg = Annotated[
    bool, typer.Option("--json", help="print one JSON document (docs/cli-json.md) instead")
]


def json_output_only() -> None:
    """Log lines to stderr, so that stdout holds the JSON document alone."""
    from fedsilo.engine.logs import configure_logging

    configure_logging("console", "WARNING")


def open_exchange(uri: str, federation_id: str, endpoint_url: str | None) -> Exchange:
    """The exchange of one federation; a plain folder path is accepted as a local store.

    A local folder that does not exist is refused: the store would create it, and a reading
    command would then report on an exchange that a typo made.
    """
    from urllib.parse import unquote, urlsplit

    from fl_core.errors import ConfigError
    from fl_core.exchange.protocol import Exchange
    from fl_core.exchange.uri import open_store

    if "://" not in uri:
        uri = Path(uri).resolve().as_uri()
    parts = urlsplit(uri)
    if parts.scheme == "file" and not Path(unquote(parts.path)).is_dir():
        raise ConfigError(
            f"exchange {uri}: no such folder; check --exchange (a folder, file://DIR or "
            "s3://bucket/prefix)"
        )
    return Exchange(open_store(uri, endpoint_url=endpoint_url), federation_id)


@ledger_app.command("verify")
def ledger_verify(
    federation: FederationArg,
    exchange: ExchangeArg,
    endpoint_url: EndpointArg = None,
    site_id: Annotated[
        str | None,
        typer.Option(
            "--site-id",
            envvar="FEDSILO_SITE_ID",
            help="verify as this hospital, against the receipts in its state folder",
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            envvar="FEDSILO_STATE_DIR",
            help="with --site-id: the hospital's state folder (as given to `client run`)",
        ),
    ] = None,
    as_json: JsonArg = False,
) -> None:
    """Recompute the hash chain from the stored files; name the first round that was altered.

    Exit 0 when every closed round verifies; exit 8 with one line naming the first bad round
    (with --json, the document is printed first). A federation that holds nothing exits 8
    too: a wrong id or exchange is never a pass. With --site-id, run with the hospital's
    role: the chain is checked against the ledger heads and update digests the hospital kept,
    one line per problem.
    """
    from fedsilo.cli.json_documents import ledger_json
    from fl_core.errors import ConfigError, LedgerVerificationError
    from fl_core.exchange.ledger import verify_ledger

    if as_json:
        json_output_only()
    opened = open_exchange(exchange, federation, endpoint_url)
    if site_id is not None:
        if as_json:
            raise ConfigError("--json is not available with --site-id yet; leave one out")
        _verify_as_site(opened, site_id, state_dir)
        return
    report = verify_ledger(opened)
    if as_json:
        print(ledger_json(report))
    if not report.ok:
        raise LedgerVerificationError(report.summary())
    if not as_json:
        stdout.print(report.summary(), highlight=False, soft_wrap=True)


def _verify_as_site(exchange: Exchange, site_id: str, state_dir: Path | None) -> None:
    from fl_core.errors import ConfigError, LedgerVerificationError
    from fl_core.exchange.receipts import read_receipts, receipts_path
    from fl_core.exchange.witness import verify_as_site

    if state_dir is None:
        raise ConfigError(
            "--site-id needs the hospital's --state-dir (FEDSILO_STATE_DIR), where its receipts "
            "are kept"
        )
    receipts = read_receipts(receipts_path(state_dir, site_id))
    report = verify_as_site(exchange, site_id, receipts)
    if not report.ok:
        raise LedgerVerificationError("\n".join(report.lines()))
    stdout.print(report.lines()[0], highlight=False, soft_wrap=True)


def status_command(
    run: Annotated[
        Path | None,
        typer.Argument(
            help="a run folder, or the folder given to `simulate --out` (its newest run); "
            "instead of --federation/--exchange"
        ),
    ] = None,
    federation: Annotated[
        str | None,
        typer.Option("--federation", envvar="FEDSILO_FEDERATION_ID", help="federation id"),
    ] = None,
    exchange: Annotated[
        str | None,
        typer.Option(
            "--exchange",
            envvar="FEDSILO_EXCHANGE",
            help="s3://bucket/prefix, file://DIR or a folder",
        ),
    ] = None,
    endpoint_url: EndpointArg = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="refresh until the federation ends")
    ] = False,
    interval_s: Annotated[
        float, typer.Option("--interval", min=0.5, help="seconds between refreshes")
    ] = 2.0,
    as_json: JsonArg = False,
) -> None:
    """Current round and phase, deadline countdown, and per hospital what it did.

    Exits 2 with one line when the exchange holds nothing of the federation (no state, no
    registration, no round): a wrong id or exchange never shows as an empty table.
    """
    from rich.live import Live

    from fedsilo.cli.json_documents import status_json
    from fedsilo.ops.status import collect_status, status_table
    from fl_core.errors import ConfigError

    if watch and as_json:
        raise ConfigError("--watch and --json together: use --json alone, once per refresh")
    if as_json:
        json_output_only()
    store = _status_exchange(run, federation, exchange, endpoint_url)
    status = collect_status(store)
    if status.holds_nothing:
        raise ConfigError(
            f"federation {status.federation_id} has no state, registration or round in "
            f"{status.exchange}; check --federation and --exchange (or the run folder)"
        )
    if as_json:
        print(status_json(status))
        return
    if not watch:
        stdout.print(status_table(status))
        return
    with Live(status_table(status), console=stdout, auto_refresh=False) as live:
        while not status.ended:
            time.sleep(interval_s)
            status = collect_status(store)
            live.update(status_table(status), refresh=True)


def _status_exchange(
    run: Path | None, federation: str | None, exchange: str | None, endpoint_url: str | None
) -> Exchange:
    """The exchange named by a run folder (its config.json) or by --federation/--exchange."""
    from fl_core.errors import ConfigError
    from fl_core.exchange.protocol import Exchange

    if run is not None:
        from fedsilo.engine.run_folder import resolve_run_folder
        from fedsilo.ops.report import open_run_exchange

        run_dir, note = resolve_run_folder(run)
        if note:
            console.print(note, highlight=False, soft_wrap=True)
        found = open_run_exchange(run_dir, endpoint_url)
        if exchange is None:
            return Exchange(found.store, federation or found.federation_id)
        federation = federation or found.federation_id
    if exchange is None or federation is None:
        raise ConfigError(
            "fedsilo status needs a run folder (fedsilo status runs/) or both --federation "
            "and --exchange"
        )
    return open_exchange(exchange, federation, endpoint_url)


def report_command(
    run: Annotated[
        Path,
        typer.Argument(help="a run folder, or the folder given to `simulate --out` (its newest)"),
    ],
    out: Annotated[Path, typer.Option("-o", "--out", help="HTML file to write")] = Path(
        "report.html"
    ),
    endpoint_url: EndpointArg = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print what the page holds as one JSON document")
    ] = False,
) -> None:
    """One self-contained HTML page of a run: cohort, rounds, hospitals, calibration, updates."""
    from fedsilo.engine.run_folder import resolve_run_folder
    from fedsilo.ops.report import write_report

    run, note = resolve_run_folder(run, needs="metrics.jsonl")
    if note and not as_json:
        stdout.print(note, highlight=False, soft_wrap=True)
    _check_run_has_rounds(run)
    outcome = write_report(run, out, endpoint_url)
    if as_json:
        print(outcome.model_dump_json(indent=2))
        return
    stdout.print(
        f"report: {out} ({len(outcome.figures)} figures, {outcome.hospitals} hospitals)",
        highlight=False,
    )


def _check_run_has_rounds(run: Path) -> None:
    """A run whose metrics.jsonl is missing or empty has nothing to report: say so, exit 2."""
    from fl_core.errors import ConfigError

    metrics = run / "metrics.jsonl"
    try:
        has_rounds = any(line.strip() for line in metrics.read_text().splitlines())
    except FileNotFoundError:
        has_rounds = False
    if not has_rounds:
        raise ConfigError(
            f"run {run} has no closed round in {metrics.name}; run `fedsilo simulate` to the "
            "end (or resume it with --run-id) before asking for a report"
        )

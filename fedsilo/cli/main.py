"""The ``fedsilo`` command line (typer): every command, and the one exit path.

Commands only parse, call and print; the work lives in ``fedsilo.engine`` (running
federations) and ``fedsilo.ops`` (reading what they left). Command modules import the heavy
parts (torch, pydantic models, boto3) inside the command, so ``fedsilo --help`` and usage
errors answer at once. Expected faults (``FedsiloError``) print one line and exit with the
error's code.
"""

from __future__ import annotations

import sys

import typer

from fedsilo.cli.data import data_app
from fedsilo.cli.onboard import offboard_command, onboard_app
from fedsilo.cli.ops import ledger_app, report_command, status_command
from fedsilo.cli.output import console
from fedsilo.cli.services import client_run, server_run
from fedsilo.cli.simulate import simulate_command
from fedsilo.cli.site import site_app
from fedsilo.cli.study import site_approve, site_status, study_app

app = typer.Typer(
    name="fedsilo",
    no_args_is_help=True,
    add_completion=False,
    help="Cross-silo federated learning for hospitals on AWS.",
)
server_app = typer.Typer(no_args_is_help=True, help="The coordinating centre's aggregator.")
client_app = typer.Typer(no_args_is_help=True, help="A hospital's training loop.")
app.command("simulate")(simulate_command)
app.add_typer(server_app, name="server")
app.add_typer(client_app, name="client")
server_app.command("run")(server_run)
client_app.command("run")(client_run)
app.add_typer(data_app, name="data", help="eICU-layout tables and per-hospital folders.")
app.add_typer(onboard_app, name="onboard")
app.add_typer(site_app, name="site")
site_app.command("approve")(site_approve)
site_app.command("status")(site_status)
app.add_typer(study_app, name="study")
app.command("offboard")(offboard_command)
app.add_typer(ledger_app, name="ledger")
app.command("status")(status_command)
app.command("report")(report_command)


def _run_app() -> int:
    """The command's exit code: expected faults become one line and their exit code."""
    from fl_core.errors import FedsiloError

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
    from fedsilo.engine.process_exit import exit_process

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

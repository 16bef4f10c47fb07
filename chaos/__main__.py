"""``python -m chaos [--quick] [--kills N] [--only NAME ...]``: the fault and attack suite.

Prints one table of figures and exits 1 if any figure misses its goal (a hostile file let in
or rejected for the wrong reason, an update lost, a round aggregated twice, a ledger that
does not verify, a final model that differs from the uninterrupted run). Everything runs on
127.0.0.1 and in a temporary folder; ``--quick`` is the smaller run of the ``slow`` test.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from bench._tables import write_tables
from chaos.suite import GROUPS, run, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and kills (CI)")
    parser.add_argument("--kills", type=int, default=None, help="random aggregator kills")
    parser.add_argument("--only", nargs="*", choices=GROUPS, default=list(GROUPS))
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folder here")
    args = parser.parse_args(argv)
    kills = args.kills if args.kills is not None else (5 if args.quick else 100)
    started = time.monotonic()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        figures = run(args.keep, args.quick, kills, set(args.only))
    else:
        with tempfile.TemporaryDirectory(prefix="fedsilo-chaos-") as tmp:
            figures = run(Path(tmp), args.quick, kills, set(args.only))
    console = Console(width=160)
    shown = table(figures)
    console.print(shown)
    write_tables("chaos", [shown])
    missed = [f for f in figures if not f.ok]
    console.print(
        f"{len(figures) - len(missed)}/{len(figures)} figures meet their goal in "
        f"{time.monotonic() - started:.0f} s",
        highlight=False,
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m bench.chaos [--quick] [--kills N] [--only NAME ...]``: the fault and attack suite.

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
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.chaos import scenarios, storage
from bench.chaos.scenarios import Figure, Reference
from bench.chaos.stores import local_federation, moto_server, s3_federation

GROUPS = ("hostile", "crash", "random", "two", "storage", "data")


def run(folder: Path, quick: bool, kills: int, only: set[str]) -> list[Figure]:
    rounds = 2 if quick else 3
    figures: list[Figure] = []
    say = Console(stderr=True)

    def step(name: str, body: Callable[[], list[Figure]]) -> None:
        started = time.monotonic()
        say.print(f"chaos: {name} ...", highlight=False)
        found = body()
        figures.extend(found)
        say.print(f"chaos: {name} done in {time.monotonic() - started:.0f} s", highlight=False)

    if "data" in only:
        step("bad tables at data prepare", lambda: storage.bad_data(folder / "data"))
    needs_federation = only - {"data"}
    if not needs_federation:
        return figures
    started = time.monotonic()
    ref: Reference = scenarios.reference(folder, rounds)
    say.print(f"chaos: reference run in {time.monotonic() - started:.0f} s", highlight=False)
    limit = {"admission": {"max_update_bytes": 4 * ref.update_bytes}}
    if "hostile" in only:
        step(
            "hostile files, local folder",
            lambda: scenarios.hostile(
                local_federation(folder / "hostile-folder", rounds=rounds, settings=limit), ref
            ),
        )
    if "crash" in only:
        step(
            "aggregator killed at every write",
            lambda: scenarios.write_crashes(folder, ref, rounds, 1 if quick else None),
        )
    if "random" in only:
        longer = rounds + 3
        step(
            "aggregator killed at random instants",
            lambda: scenarios.random_crashes(folder, ref_for(folder, ref, longer), longer, kills),
        )
    s3_groups = needs_federation & {"hostile", "two", "storage"}
    if not s3_groups or (quick and s3_groups == {"hostile"}):
        return figures
    with moto_server(folder) as endpoint:
        if "hostile" in only:
            step(
                "hostile files, moto S3",
                lambda: scenarios.hostile(
                    s3_federation(folder / "hostile-s3", endpoint, rounds=rounds, settings=limit),
                    ref,
                ),
            )
        if "two" in only:
            step("two aggregators", lambda: storage.two_aggregators(folder, endpoint, rounds, ref))
        if "storage" in only:
            step("storage faults", lambda: storage.storage_faults(folder, endpoint, rounds, ref))
    return figures


_extra_refs: dict[int, Reference] = {}


def ref_for(folder: Path, ref: Reference, rounds: int) -> Reference:
    """The reference of a run with another number of rounds (the random-kill run is longer)."""
    if rounds not in _extra_refs:
        _extra_refs[rounds] = scenarios.reference(folder / f"r{rounds}", rounds)
    return _extra_refs[rounds]


def table(figures: list[Figure]) -> Table:
    out = Table(title="What fedsilo survives (bench/chaos)")
    for column in ("scenario", "figure", "value", "goal", ""):
        out.add_column(column)
    for f in figures:
        out.add_row(f.group, f.figure, f.value, f.goal, "ok" if f.ok else "[red]MISS[/]")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
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
    console.print(table(figures))
    missed = [f for f in figures if not f.ok]
    console.print(
        f"{len(figures) - len(missed)}/{len(figures)} figures meet their goal in "
        f"{time.monotonic() - started:.0f} s",
        highlight=False,
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

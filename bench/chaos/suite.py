"""The suite's run: which scenarios, in which order, with which sizes.

``--quick`` (the ``slow`` test) keeps to a local folder: the hostile files, and the kills at
every write of round 1's close followed by a few at random instants. The full run adds the
kills of every round, 100 random kills, moto S3 (hostile files, two aggregators, storage
faults, a vanished bucket) and the bad tables.
"""

from __future__ import annotations

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

    if "data" in only and not quick:  # tests/data covers these cases in the test suite
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
            lambda: scenarios.write_crashes(
                folder, ref, rounds, 1 if quick else None, kills if quick else 0
            ),
        )
    if "random" in only and not quick:
        longer = rounds + 3
        step(
            "aggregator killed at random instants",
            lambda: scenarios.random_crashes(folder, ref_for(folder, ref, longer), longer, kills),
        )
    s3_groups = needs_federation & {"hostile", "two", "storage"}
    if not s3_groups or quick:  # the quick run (the slow test) stays on a local folder
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
            longer = rounds + 3  # time for the third to start while the rounds go on
            step(
                "two aggregators",
                lambda: storage.two_aggregators(
                    folder, endpoint, longer, ref_for(folder, ref, longer)
                ),
            )
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

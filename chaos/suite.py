"""The suite's run: which scenarios, in which order, with which sizes.

``--quick`` (the ``slow`` test) keeps to a local folder: the hostile files, the hostile
member's attacks (planted and junk keys, crash headers, malformed reports, an inflated
``num_examples``, non-ASCII account ids), and the kills at every write of round 1's close
followed by a few at random instants. The full run adds the kills of every round, 100 random
kills, moto S3 (hostile files and member attacks with an SSE-C upload, two aggregators,
storage faults, a vanished bucket) and the bad tables.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from chaos import members, scenarios, storage
from chaos.scenarios import Figure, Reference
from chaos.stores import local_federation, moto_server, s3_federation

GROUPS = ("hostile", "members", "crash", "random", "two", "storage", "data")

Step = tuple[str, Callable[[], list[Figure]]]


class _Steps:
    """Runs named steps, saying when each starts and ends (on stderr, the table on stdout)."""

    def __init__(self) -> None:
        self.say = Console(stderr=True)

    def run(self, steps: list[Step]) -> list[Figure]:
        figures = []
        for name, body in steps:
            started = time.monotonic()
            self.say.print(f"chaos: {name} ...", highlight=False)
            figures += body()
            took = time.monotonic() - started
            self.say.print(f"chaos: {name} done in {took:.0f} s", highlight=False)
        return figures


def run(folder: Path, quick: bool, kills: int, only: set[str]) -> list[Figure]:
    """The chosen groups; the local-folder and the moto S3 scenarios run side by side (two
    threads, each driving its own processes: they mostly wait on each other, not on CPU)."""
    rounds = 2 if quick else 3
    steps = _Steps()
    figures: list[Figure] = []
    if "data" in only and not quick:  # tests/fl_core/data covers these cases in the test suite
        figures += steps.run(
            [("bad tables at data prepare", lambda: storage.bad_data(folder / "data"))]
        )
    if not only - {"data"}:
        return figures
    ref = scenarios.reference(folder, rounds)
    refs = _References(folder, ref)
    limit = {"admission": {"max_update_bytes": 4 * ref.update_bytes}}
    local: list[Step] = []
    if "hostile" in only:
        local.append(
            (
                "hostile files, local folder",
                lambda: scenarios.hostile(
                    local_federation(folder / "hostile-folder", rounds=rounds, settings=limit), ref
                ),
            )
        )
    junk = 200 if quick else 1000
    if "members" in only:
        local += [
            (
                "hostile members, local folder",
                lambda: members.hostile_members(
                    local_federation(folder / "members-folder", rounds=rounds), ref, junk
                ),
            ),
            (
                "num_examples overclaim, local folder",
                lambda: members.overclaim(
                    local_federation(folder / "overclaim-folder", rounds=rounds)
                ),
            ),
            ("non-ASCII account ids at onboarding", lambda: members.onboarding_ids(folder / "ids")),
        ]
    crash: list[Step] = []
    if "crash" in only:
        crash.append(
            (
                "aggregator killed at every write",
                lambda: scenarios.write_crashes(
                    folder, ref, rounds, 1 if quick else None, kills if quick else 0
                ),
            )
        )
    if "random" in only and not quick:
        longer = rounds + 3
        crash.append(
            (
                "aggregator killed at random instants",
                lambda: scenarios.random_crashes(folder, refs.get(longer), longer, kills),
            )
        )
    s3 = set() if quick else only & {"hostile", "members", "two", "storage", "crash"}

    def on_s3() -> list[Figure]:
        if not s3:
            return []
        with moto_server(folder) as endpoint:
            remote: list[Step] = []
            if "hostile" in s3:
                federation = s3_federation(
                    folder / "hostile-s3", endpoint, rounds=rounds, settings=limit
                )
                remote.append(
                    ("hostile files, moto S3", lambda: scenarios.hostile(federation, ref))
                )
            if "members" in s3:
                members_s3 = s3_federation(folder / "members-s3", endpoint, rounds=rounds)
                ssec_s3 = s3_federation(folder / "ssec-s3", endpoint, rounds=rounds)
                remote += [
                    (
                        "hostile members, moto S3",
                        lambda: members.hostile_members(members_s3, ref, junk),
                    ),
                    ("an update stored with SSE-C", lambda: members.ssec_upload(ssec_s3, ref)),
                ]
            if "two" in s3:
                longer = rounds + 3  # time for the third to start while the rounds go on
                remote.append(
                    (
                        "two aggregators",
                        lambda: storage.two_aggregators(folder, endpoint, longer, refs.get(longer)),
                    )
                )
            if "crash" in s3:
                remote.append(
                    (
                        "aggregator killed at every write of round 1, then at random, moto S3",
                        lambda: scenarios.write_crashes(folder, ref, rounds, 1, 10, endpoint),
                    )
                )
            if "storage" in s3:
                remote.append(
                    (
                        "storage faults",
                        lambda: storage.storage_faults(folder, endpoint, rounds, ref),
                    )
                )
            return steps.run(remote)

    if quick:  # the slow test: the hostile run beside the crash run
        sides = [lambda: steps.run(local), lambda: steps.run(crash)]
    else:
        sides = [lambda: steps.run(local + crash), on_s3]
    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(side) for side in sides]:
            figures += future.result()
    return figures


class _References:
    """Uninterrupted runs of other lengths (the random-kill and two-aggregator runs are
    longer), made once each even when both sides ask at the same time."""

    def __init__(self, folder: Path, ref: Reference) -> None:
        self.folder = folder
        self.made: dict[int, Reference] = {}
        self.lock = threading.Lock()

    def get(self, rounds: int) -> Reference:
        with self.lock:
            if rounds not in self.made:
                self.made[rounds] = scenarios.reference(self.folder / f"r{rounds}", rounds)
            return self.made[rounds]


def table(figures: list[Figure]) -> Table:
    out = Table(title="What fedsilo survives (chaos)")
    for column in ("scenario", "figure", "value", "goal", ""):
        out.add_column(column)
    for f in figures:
        out.add_row(f.group, f.figure, f.value, f.goal, "ok" if f.ok else "[red]MISS[/]")
    return out

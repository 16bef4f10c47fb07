"""How every comparison in ``bench/`` is run and summarised: interleaved repeats, min / median.

Why one module: a sceptical reader should have to check the method once. Contenders run
interleaved in one run (each repeat runs every contender once, in an order rotated from the
last repeat's), so load from elsewhere on a shared machine falls on all of them alike; each
row prints the min and the median of its runs, and a ratio of medians against the table's
baseline, which the table's caption names. No figure here is computed from sizes: what is
summarised is what was timed.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from rich.console import Console
from rich.table import Table

_T = TypeVar("_T")

MIN_REPEATS = 3
"""The least a comparison runs each contender (``--quick`` included)."""


def rotated(items: Sequence[_T], by: int) -> list[_T]:
    """``items`` rotated left by ``by`` (repeat ``by`` of an interleaved run)."""
    if not items:
        return []
    shift = by % len(items)
    return [*items[shift:], *items[:shift]]


def interleave(
    contenders: Mapping[str, Callable[[], _T]],
    repeats: int,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, list[_T]]:
    """Run every contender ``repeats`` times, interleaved; each one's results in run order.

    Repeat ``r`` runs all contenders once, in their given order rotated left by ``r``
    (A B C, B C A, C A B, ...), so no contender always runs first, after a cold start, or
    after the same neighbour.
    """
    if repeats < 1:
        raise ValueError(f"repeats is {repeats}; run each contender at least once")
    results: dict[str, list[_T]] = {name: [] for name in contenders}
    for repeat in range(repeats):
        for name in rotated(list(contenders), repeat):
            log(f"repeat {repeat + 1}/{repeats}: {name}")
            results[name].append(contenders[name]())
    return results


def timed(work: Callable[[], object]) -> Callable[[], float]:
    """A contender that runs ``work`` once and returns its wall seconds (``perf_counter``)."""

    def run() -> float:
        started = time.perf_counter()
        work()
        return time.perf_counter() - started

    return run


@dataclass(frozen=True)
class Spread:
    """Min and median of one contender's runs (seconds, or whatever the runs measured)."""

    min: float
    median: float
    runs: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no runs to summarise; the contender was never measured")
        return cls(min(values), statistics.median(values), len(values))

    def over(self, baseline: Spread) -> float:
        """This median over the baseline's median (1.00 = the same; > 1 = more)."""
        if baseline.median <= 0:
            raise ValueError(f"baseline median is {baseline.median}; it must be > 0")
        return self.median / baseline.median


def spread_cells(values: Sequence[float], baseline: Sequence[float], spec: str) -> list[str]:
    """Table cells ``[min, median, x baseline]`` for one row's runs (ratio of medians)."""
    own, base = Spread.of(values), Spread.of(baseline)
    return [format(own.min, spec), format(own.median, spec), f"{own.over(base):.2f}"]


def new_table(title: str) -> Table:
    """A table whose title says what was compared and which row is the baseline."""
    return Table(title=title, title_justify="left", caption_justify="left")


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted, or a dash for a figure that was not measured."""
    return "-" if value is None else format(value, spec)


def usable_cores() -> int:
    """Cores this process may run on (its affinity), which can be fewer than the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_note() -> str:
    """The machine may be shared: the cores and the load say how much to trust a time."""
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"load average (1, 5, 15 min) when the table was drawn: {load} on {os.cpu_count()} "
        f"cores ({usable_cores()} usable)"
    )


def method_note(repeats: int, baseline: str, what: str) -> str:
    """The caption line every timing table carries: what, how often, against which row."""
    return (
        f"{what}; {repeats} runs of each, interleaved (each repeat in a rotated order); min "
        f"and median over the runs; 'x {baseline}' = this row's median / the median of the "
        f"baseline row '{baseline}' (> 1 = more)."
    )


def table_console(width: int = 160) -> Console:
    """The console a benchmark prints its tables to: the terminal's own width, or ``width``
    columns when not a terminal, so a table written to a log file does not wrap."""
    return Console() if sys.stdout.isatty() else Console(width=width)


def bench_console() -> tuple[Console, Callable[[str], None]]:
    """A wide ``table_console`` (180 columns) and an indented plain-text progress log."""
    console = table_console(width=180)

    def log(line: str) -> None:
        console.print(f"  {line}", markup=False, highlight=False)

    return console, log


def quality_note(measured: str, runs: str) -> str:
    """The caption of a table that measures model quality: says it is not a speed comparison."""
    return (
        f"Model quality, not speed: {measured}, {runs} (deterministic under the seed); no timing."
    )

"""Time the eICU data layer at eICU's scale: synthesise, prepare and load the twin.

``python -m bench --only data_bench`` (or ``python bench/data_bench.py [--quick]``). The whole
pipeline (``HOSPITALS`` hospitals, ``STAYS`` unit stays; quick: ``QUICK_STAYS``) runs
``REPEATS`` times, each in a fresh folder, and one table gives each stage's min and median
wall-clock seconds; the stages are parts of one pipeline, not alternatives, so that table has
no baseline. A second table gives the twin's shape (sizes, mortality, yardsticks), so a
slow-down or a drift of the twin away from eICU shows at a glance. No thresholds: numbers only.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.table import Table
from sklearn.metrics import roc_auc_score

from bench import _tables, _timing
from fl_core.data.eicu.cohort import Cohort, load_cohort
from fl_core.data.eicu.features import build_features
from fl_core.data.eicu.prepare import prepare_eicu
from fl_core.data.eicu.synth import TwinSummary, synthesise
from fl_core.data.prepared import PreparedFolderSource

HOSPITALS = 208
STAYS = 200_000
QUICK_STAYS = 20_000
REPEATS = _timing.MIN_REPEATS


@dataclass(frozen=True)
class PipelineRun:
    """One run of the pipeline: seconds and a note per stage, and what it built."""

    stages: list[tuple[str, float, str]]
    twin: TwinSummary
    cohort: Cohort


def run_pipeline(root: Path, stays: int) -> PipelineRun:
    """Synthesise, read, featurise, prepare and load the twin under ``root``, timing each."""
    stages: list[tuple[str, float, str]] = []
    started = time.perf_counter()
    twin = synthesise(root / "twin", hospitals=HOSPITALS, stays=stays, seed=0)
    stages.append(("synthesise (4 tables + true risk)", time.perf_counter() - started, ""))

    started = time.perf_counter()
    cohort = load_cohort(root / "twin")
    read_s = time.perf_counter() - started
    stages.append(("  read tables + cohort", read_s, f"{len(cohort.stays)} stays"))
    started = time.perf_counter()
    x = build_features(cohort.stays, cohort.hospitals)
    stages.append(("  build features", time.perf_counter() - started, f"{x.shape[1]} cols"))

    started = time.perf_counter()
    result = prepare_eicu(root / "twin", root / "prepared", min_stays=1, seed=0)
    stages.append(
        ("prepare (read, features, split, write)", time.perf_counter() - started,
         f"{len(result.schema.sites)} sites")
    )  # fmt: skip

    started = time.perf_counter()
    source = PreparedFolderSource(root / "prepared")
    rows = 0
    for site_id in source.site_ids():
        site = source.load_site(site_id)
        rows += site.train.num_examples + site.valid.num_examples + site.test.num_examples
    stages.append(("load every site", time.perf_counter() - started, f"{rows} rows"))
    return PipelineRun(stages, twin, cohort)


def _run_in_fresh_folder(stays: int) -> PipelineRun:
    with tempfile.TemporaryDirectory(prefix="fedsilo-data-bench-") as tmp:
        return run_pipeline(Path(tmp), stays)


def main(quick: bool = False) -> None:
    stays = QUICK_STAYS if quick else STAYS
    console = _timing.table_console()
    runs = _timing.interleave({"pipeline": lambda: _run_in_fresh_folder(stays)}, REPEATS)
    found = runs["pipeline"]
    table = _timing.new_table(
        f"eICU data layer: {HOSPITALS} hospitals, {stays:,} unit stays; no baseline "
        "(stages of one pipeline)"
    )
    table.add_column("stage")
    table.add_column("seconds min", justify="right")
    table.add_column("seconds median", justify="right")
    table.add_column("note")
    for index, (stage, _, note) in enumerate(found[-1].stages):
        spread = _timing.Spread.of([run.stages[index][1] for run in found])
        table.add_row(stage, f"{spread.min:.2f}", f"{spread.median:.2f}", note)
    table.caption = "\n".join(
        [
            f"Wall seconds; the whole pipeline {REPEATS} times, one after the other, each in a "
            "fresh folder (files just written, in the page cache); min and median per stage; "
            "indented stages are parts of 'prepare' timed on their own.",
            _timing.load_note(),
        ]
    )
    console.print(table)

    twin, cohort = found[-1].twin, found[-1].cohort
    sizes = np.array(twin.sizes)
    y = cohort.stays["label"].to_numpy()
    apache = cohort.stays["ref_apache"].to_numpy()
    known = ~np.isnan(apache)
    shape = Table(title="twin shape", show_header=False)
    shape.add_row("unit stays / cohort stays", f"{twin.stays:,} / {len(y):,}")
    shape.add_row("mortality (all / cohort)", f"{twin.mortality:.1%} / {y.mean():.1%}")
    shape.add_row(
        "stays per hospital",
        f"min {sizes.min()}, median {np.median(sizes):.0f}, max {sizes.max()} "
        f"({sizes.max() / sizes.sum():.1%}); {(sizes < 100).sum()} under 100, "
        f"{(sizes >= 1000).sum()} with 1000+",
    )
    mortality = np.array(twin.hospital_mortality)[sizes >= 100]
    shape.add_row(
        "hospital mortality, 100+ stays",
        f"10th pct {np.percentile(mortality, 10):.1%}, 90th pct {np.percentile(mortality, 90):.1%}",
    )
    shape.add_row("APACHE-like AUROC (cohort)", f"{roc_auc_score(y[known], apache[known]):.3f}")
    shape.add_row("Bayes AUROC (cohort)", f"{roc_auc_score(y, cohort.stays['ref_bayes']):.3f}")
    console.print(shape)
    _tables.write_tables("data_bench", [table, shape])


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])

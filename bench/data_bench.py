"""Time the eICU data layer at eICU's scale: synthesise, prepare and load 200,000 stays.

``python -m bench --only data_bench`` (or ``python bench/data_bench.py [--quick]``). Prints one
table of wall-clock seconds per stage and the twin's shape (sizes, mortality, yardsticks), so a
slow-down or a drift of the twin away from eICU shows at a glance. No thresholds: numbers only.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.metrics import roc_auc_score

from fl_core.data.eicu.cohort import load_cohort
from fl_core.data.eicu.features import build_features
from fl_core.data.eicu.prepare import prepare_eicu
from fl_core.data.eicu.synth import synthesize
from fl_core.data.prepared import PreparedFolderSource

HOSPITALS = 208
STAYS = 200_000
QUICK_STAYS = 20_000


def main(quick: bool = False) -> None:
    stays = QUICK_STAYS if quick else STAYS
    console = Console()
    timings: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="fedsilo-data-bench-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        twin = synthesize(root / "twin", hospitals=HOSPITALS, stays=stays, seed=0)
        timings.append(("synthesise (4 tables + true risk)", time.perf_counter() - started, ""))

        started = time.perf_counter()
        cohort = load_cohort(root / "twin")
        read_s = time.perf_counter() - started
        timings.append(("  read tables + cohort", read_s, f"{len(cohort.stays)} stays"))
        started = time.perf_counter()
        x = build_features(cohort.stays, cohort.hospitals)
        timings.append(("  build features", time.perf_counter() - started, f"{x.shape[1]} cols"))

        started = time.perf_counter()
        result = prepare_eicu(root / "twin", root / "prepared", min_stays=1, seed=0)
        timings.append(
            ("prepare (read, features, split, write)", time.perf_counter() - started,
             f"{len(result.schema.sites)} sites")
        )  # fmt: skip

        started = time.perf_counter()
        source = PreparedFolderSource(root / "prepared")
        rows = 0
        for site_id in source.site_ids():
            site = source.load_site(site_id)
            rows += site.train.num_examples + site.valid.num_examples + site.test.num_examples
        timings.append(("load every site", time.perf_counter() - started, f"{rows} rows"))

    table = Table(title=f"eICU data layer: {HOSPITALS} hospitals, {stays:,} unit stays")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("note")
    for stage, seconds, note in timings:
        table.add_row(stage, f"{seconds:.2f}", note)
    console.print(table)

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


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])

"""The AUROC table: federated, pooled, local-only mean, APACHE and Bayes.

``python -m bench --only eicu_bench`` (or ``python bench/eicu_bench.py [--quick]``), all with
the config's defaults (``bench/defaults_sweep.py`` chose them; no setting is overridden here).
- The synthetic twin, 40 hospitals x 20,000 unit stays and 208 x 200,000 (quick: the first),
  scored on its prepared test split (thousands of deaths), Bayes = the twin's true risk.
- The real eICU-CRD Demo (when ``../shared/data/eicu-demo`` exists), cross-validated per
  hospital (``fedsilo.ops.evaluate``: ``DEMO_FOLDS`` folds x ``DEMO_REPEATS`` split seeds,
  quick: 1), beside published figures (``PUBLISHED``).
No thresholds: numbers only (the tests hold the bars). This measures model quality, not
speed: AUROC is deterministic under the seed, so each federation runs once, and the table
shows no time (each part's wall time is printed as a progress line, for planning a run).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from rich.table import Table

from bench import _tables, _timing
from fedsilo.engine.logs import configure_logging
from fedsilo.ops.evaluate import CrossValidation, Scores, cross_validate, score_federation
from fl_core.config import FederationConfig, load_config
from fl_core.data.eicu.prepare import prepare_eicu
from fl_core.data.eicu.synth import synthesise

TWINS = ((40, 20_000), (208, 200_000))
"""``make run``'s twin and the full-size one (hospitals, stays); quick runs the first only."""
DEMO_DIR = (Path(__file__).resolve().parents[1] / "../shared/data/eicu-demo").resolve()
DEMO_FOLDS = 5
DEMO_REPEATS = 3
PUBLISHED = {"pooled LR on APS variables (5-fold CV)": 0.824, "APACHE IVa": 0.865}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _twin_row(scores: Scores) -> list[str]:
    return [
        _fmt(scores.federated),
        _fmt(scores.pooled),
        f"{_fmt(scores.local_only_mean)} ({scores.local_only_sites} sites)",
        _fmt(scores.references.get("apache")),
        _fmt(scores.references.get("bayes")),
    ]


def _cv_row(cv: CrossValidation) -> list[str]:
    cells = []
    for name in ("federated", "pooled", "local_only_mean", "apache"):
        mean, sd, count = cv.spread(name)
        cells.append("-" if count == 0 else f"{mean:.3f} +- {sd:.3f}")
    return [*cells, "unknown"]


def _twin(root: Path, hospitals: int, stays: int) -> tuple[Scores, str]:
    folder = root / f"twin{hospitals}"
    synthesise(folder, hospitals=hospitals, stays=stays, seed=0)
    prepare_eicu(folder, root / f"twin{hospitals}_prepared", min_stays=1, seed=0)
    config = load_config()
    scores, _, _ = score_federation(
        config, root / f"twin{hospitals}_prepared", root / "runs", f"twin{hospitals}"
    )
    label = (
        f"twin {hospitals} x {stays:,}, {config.rounds} rounds ({scores.test_deaths} test deaths)"
    )
    return scores, label


def _demo(root: Path, quick: bool) -> tuple[CrossValidation, FederationConfig]:
    prepare_eicu(DEMO_DIR, root / "demo_prepared", min_stays=1, seed=0)
    config = load_config()
    repeats = 1 if quick else DEMO_REPEATS
    cv = cross_validate(
        root / "demo_prepared", root / "demo_cv", config, folds=DEMO_FOLDS, repeats=repeats
    )
    return cv, config


def main(quick: bool = False) -> None:
    configure_logging("auto", "WARNING")  # one line per update otherwise buries the table
    console = _timing.table_console()
    table = Table(title="in-hospital mortality AUROC, default config")
    for column in ("data", "federated", "pooled", "local-only mean", "APACHE", "Bayes"):
        table.add_column(column)
    with tempfile.TemporaryDirectory(prefix="fedsilo-eicu-bench-") as tmp:
        root = Path(tmp)
        for hospitals, stays in TWINS[:1] if quick else TWINS:
            started = time.perf_counter()
            scores, label = _twin(root, hospitals, stays)
            table.add_row(label, *_twin_row(scores))
            console.print(f"{label}: done in {time.perf_counter() - started:.0f} s")
        if DEMO_DIR.is_dir():
            started = time.perf_counter()
            cv, config = _demo(root, quick)
            oof = {n: cv.out_of_fold_spread(n)[0] for n in ("federated", "apache")}
            console.print(f"eICU demo: done in {time.perf_counter() - started:.0f} s")
            table.add_row(
                f"eICU demo, {cv.folds}-fold CV x {cv.repeats} (mean +- sd over folds), "
                f"{config.rounds} rounds",
                *_cv_row(cv),
            )
            table.add_row(
                "eICU demo, out-of-fold over every stay",
                f"{oof['federated']:.3f}",
                "-",
                "-",
                f"{oof['apache']:.3f}",
                "unknown",
            )
        else:
            console.print(f"eICU demo not at {DEMO_DIR}: its rows are left out")
    table.caption = _timing.quality_note("AUROC on held-out stays", "one run per row")
    console.print(table)
    _tables.write_tables("eicu_bench", [table])
    console.print(
        "published on the demo's first adult stays: "
        + ", ".join(f"{k} {v:.3f}" for k, v in PUBLISHED.items())
    )


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])

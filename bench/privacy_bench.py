"""The AUROC cost of differential privacy on the eICU twin.

``python -m bench --only privacy_bench`` (or ``python bench/privacy_bench.py [--quick]``).
One federation per row on the same prepared twin: no DP, then DP-SGD at every hospital
(sample-level, Opacus) and DP-FedAvg at the aggregator (client-level) at target epsilon 1, 3
and 8. AUROC is the pooled test-split AUROC of the final model (from the hospitals' summed
histograms); "epsilon spent" is what the accountants recorded in the last training round's
``result.json`` (DP-SGD: the largest over hospitals, and the median). No thresholds.

Reading the numbers: DP-FedAvg's noise is ``noise_multiplier * clip_norm / n_sites`` per
coordinate of the averaged update, and with every site invited every round there is no
subsampling amplification, so a few hundred hospitals over a handful of rounds need a noise
multiplier of several units for single-digit epsilon: the noise then dominates the signal of
the clipped updates. DP-SGD protects each patient rather than each hospital; eICU's many tiny
hospitals sample their whole table every step (rate 1), so they, too, need large noise per
step.

This table measures model quality and privacy spent, not speed: each federation runs once and
no time is shown. DP-SGD's noise is drawn from secret seeds, so a DP row's AUROC moves from
run to run; the no-DP row is deterministic under the seed.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.table import Table

from bench import _tables, _timing
from fedsilo.engine.logs import configure_logging
from fedsilo.engine.process_engine import simulate
from fl_core.config import load_config
from fl_core.data.eicu.prepare import prepare_eicu
from fl_core.data.eicu.synth import synthesise
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.uri import open_store

EPSILONS = (1.0, 3.0, 8.0)
HOSPITALS, STAYS, ROUNDS = 208, 20_000, 10
QUICK_HOSPITALS, QUICK_STAYS, QUICK_ROUNDS = 40, 4_000, 4
TRAINING = {"training.optimizer": "sgd", "training.learning_rate": 0.02}
"""Plain SGD for every row (as in the eICU bench's demo settings): Adam rescales each noisy
coordinate to a step of the learning rate, so under DP-SGD its update is sign noise and the
model stays near its initial weights (its AUROC near the "initial AUROC" column)."""
DP_SGD = {"privacy.dp_sgd.delta": 1e-5, "privacy.dp_sgd.max_grad_norm": 1.0}
DP_FEDAVG = {"privacy.dp_fedavg.delta": 1e-3, "privacy.dp_fedavg.clip_norm": 0.5}


def _variants() -> list[tuple[str, float | None, dict[str, Any]]]:
    rows: list[tuple[str, float | None, dict[str, Any]]] = [("none", None, {})]
    for kind, base, key in (
        ("DP-SGD", DP_SGD, "privacy.dp_sgd.target_epsilon"),
        ("DP-FedAvg", DP_FEDAVG, "privacy.dp_fedavg.target_epsilon"),
    ):
        rows += [(kind, eps, {**base, key: eps}) for eps in EPSILONS]
    return rows


def _spent(uri: str, federation_id: str, rounds: int) -> tuple[str, str, str]:
    """Initial model's AUROC, and (DP-SGD max / median, DP-FedAvg) epsilon of the last round."""
    exchange = Exchange(open_store(uri), federation_id)
    first = exchange.read_result(1)
    initial = first.evaluation.auroc if first and first.evaluation else None
    start = "-" if initial is None else f"{initial:.3f}"
    result = exchange.read_result(rounds)
    if result is None or result.privacy is None:
        return start, "-", "-"
    sites = list(result.privacy.site_epsilon.values())
    sgd = f"{max(sites):.2f} / {statistics.median(sites):.2f}" if sites else "-"
    fedavg = result.privacy.dp_fedavg_epsilon
    return start, sgd, "-" if fedavg is None else f"{fedavg:.2f}"


def run(root: Path, quick: bool) -> Table:
    hospitals = QUICK_HOSPITALS if quick else HOSPITALS
    stays = QUICK_STAYS if quick else STAYS
    rounds = QUICK_ROUNDS if quick else ROUNDS
    synthesise(root / "twin", hospitals=hospitals, stays=stays, seed=0)
    prepare_eicu(root / "twin", root / "prepared", min_stays=1, seed=0)
    table = Table(
        title=f"AUROC cost of privacy, eICU twin {hospitals} hospitals x {stays:,} stays, "
        f"{rounds} rounds"
    )
    for column in ("DP", "target eps", "AUROC", "cost vs none", "initial AUROC",
                   "eps DP-SGD max/median", "eps DP-FedAvg"):  # fmt: skip
        table.add_column(column, justify="right")
    baseline: float | None = None
    for kind, target, overrides in _variants():
        config = load_config(
            overrides={
                "federation_id": "privacy-bench",
                "rounds": rounds,
                "data.source": "prepared",
                "data.path": str(root / "prepared"),
                **TRAINING,
                **overrides,
            }
        )
        label = f"{kind}-{target}".lower().replace(".", "_")
        result = simulate(config, root / "runs", run_id=label)
        auroc = result.rows[-1].auroc if result.rows else None
        if kind == "none":
            baseline = auroc
        cost = "-" if auroc is None or baseline is None or kind == "none" else (
            f"{baseline - auroc:+.3f}")  # fmt: skip
        start, sgd, fedavg = _spent(result.exchange_uri, config.federation_id, rounds)
        table.add_row(
            kind,
            "-" if target is None else f"{target:g}",
            "-" if auroc is None else f"{auroc:.3f}",
            cost,
            start,
            sgd,
            fedavg,
        )
    table.caption = (
        "Model quality and privacy spent, not speed: pooled test AUROC of the final model, one "
        "run per row (DP noise comes from secret seeds: DP rows move from run to run); 'cost "
        "vs none' = AUROC of the no-DP row minus this row's; no timing."
    )
    return table


def main(quick: bool) -> None:
    configure_logging("auto", "WARNING")  # one line per update otherwise buries the table
    with tempfile.TemporaryDirectory(prefix="fedsilo-privacy-bench-") as scratch:
        console = _timing.table_console()
        table = run(Path(scratch), quick)
        console.print(table)
        _tables.write_tables("privacy_bench", [table])


if __name__ == "__main__":
    main("--quick" in sys.argv)

"""Secure aggregation's cost per round: time and bytes, against plain FedAvg.

Two tables for ``NUM_SITES`` hospitals:

- **a whole round**: the aggregator (``RoundLoop``, admission on, as production runs it) and
  the hospitals (threads running the real client loop) over a local-directory exchange, with
  trivial training, so what differs between secagg off and on is the protocol: round seconds
  (publish to result) and the bytes the round wrote, split into model updates and secagg
  documents (file sizes on disk, not computed). Off and on run interleaved, ``REPEATS`` times
  each per model; the baseline of each model is its secagg-off row.
- **each step's time** (called directly, interleaved with the other steps): a hospital's
  advert (Shamir shares of two secrets for every site, one encryption per site), its masking
  (quantise + one AES-CTR mask stream per site), its unmask answer; the aggregator's
  reconstruction (Shamir for every surviving site) and mask removal. The steps are parts of
  one protocol, not alternatives: that table has no baseline.

Why: masked updates are ring elements wider than float32, and the adverts and the unmask
request grow with the square of the number of hospitals, so both the bytes and the time of a
secure round must be read next to a plain one measured in the same run.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.table import Table
from torch import nn

from bench import _tables, _timing
from bench._secagg_harness import Logistic, run_round
from fedsilo.engine.logs import configure_logging
from fl_client.secagg_client import build_advert, build_answer, masked_weights
from fl_core.config import FederationConfig, load_config
from fl_core.secagg import masking, shamir, transport
from fl_core.secagg.field import FieldParams, fractional_bits_for
from fl_core.secagg.messages import RosterEntry, SecAggRoster, SecAggSetup, SecAggUnmaskRequest
from fl_core.serialisation import TensorSpec

NUM_SITES = 20
REPEATS = _timing.MIN_REPEATS
STEP_REPEATS = 7
MODELS: dict[str, Callable[[], nn.Module]] = {
    "mlp 30-32-1": lambda: Logistic(30, (32,)),
    "mlp 64-256-256-1": lambda: Logistic(64, (256, 256)),
    "mlp 256-1024-768-1": lambda: Logistic(256, (1024, 768)),
}


def _config(secagg: bool) -> FederationConfig:
    return load_config(
        overrides={
            "federation_id": "bench",
            "rounds": 1,
            "evaluation.histogram_bins": 10,
            "round.min_sites": 2,
            "round.deadline_s": 60.0,
            "round.poll_interval_s": 0.01,
            "data.synthetic.hospitals": NUM_SITES,
            "privacy.secagg.enabled": secagg,
        }
    )


def _round_bytes(workdir: Path) -> dict[str, int]:
    """Bytes written in round 1 by kind of object."""
    kinds = {"updates": 0, "secagg": 0, "other": 0}
    for path in (workdir / "exchange").rglob("*"):
        if path.is_file() and "/rounds/000001/" in str(path):
            if ".secagg-" in path.name:
                kinds["secagg"] += path.stat().st_size
            elif "/updates/" in str(path):
                kinds["updates"] += path.stat().st_size
            else:
                kinds["other"] += path.stat().st_size
    return kinds


def measure_round(model: Callable[[], nn.Module], secagg: bool) -> tuple[float, dict[str, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        sites = [f"site-{i:02d}" for i in range(NUM_SITES)]
        exchange, _, _ = run_round(Path(tmp), sites, _config(secagg), model)
        result = exchange.read_result(1)
        assert result is not None and len(result.accepted) == NUM_SITES
        return result.closed_unix - result.started_unix, _round_bytes(Path(tmp))


def measure_steps(model: Callable[[], nn.Module], repeats: int) -> dict[str, list[float]]:
    """Seconds of each protocol step for one hospital / the aggregator, every run, interleaved."""
    sites = [f"site-{i:02d}" for i in range(NUM_SITES)]
    keys = {s: masking.new_private_key() for s in sites}
    max_weight = 10_000_000
    roster = SecAggRoster(
        federation_id="bench",
        round_index=1,
        global_sha256="0" * 64,
        sites=[
            RosterEntry(site_id=s, public_key=masking.public_bytes(keys[s]).hex()) for s in sites
        ],
        threshold=NUM_SITES - NUM_SITES // 3,
        modulus_bits=64,
        fractional_bits=fractional_bits_for(64, 4.0, max_weight, NUM_SITES),
        clip=4.0,
        max_weight=max_weight,
    )
    built = {s: build_advert(s, keys[s], roster) for s in sites}
    setup = SecAggSetup(
        federation_id="bench",
        round_index=1,
        roster_sha256=transport.digest(roster),
        participants={s: a.mask_public_key for s, (a, _) in built.items()},
    )
    global_w = {k: v.detach().numpy().copy() for k, v in model().state_dict().items()}
    trained = {k: v + np.float32(0.01) for k, v in global_w.items()}
    survivors, dropped = sites[:-2], sites[-2:]
    request = SecAggUnmaskRequest(
        federation_id="bench",
        round_index=1,
        setup_sha256=transport.digest(setup),
        survivors=survivors,
        dropped=dropped,
        relayed={r: {s: a.shares[r] for s, (a, _) in built.items()} for r in survivors},
    )
    answers = {s: build_answer(request, setup, roster, s, keys[s]) for s in survivors}
    params = FieldParams(64, roster.fractional_bits, 4.0)
    first = sites[0]
    size = masking.flat_size({k: _spec(v) for k, v in global_w.items()})

    def reconstruct() -> None:
        holders = sorted(answers)[: roster.threshold]
        for site in survivors:
            shamir.reconstruct(
                [
                    shamir.Share.from_bytes(
                        roster.x_of(h), bytes.fromhex(answers[h].self_mask_shares[site])
                    )
                    for h in holders
                ],
                roster.threshold,
            )

    total = np.zeros(size, np.uint64)
    seeds = [bytes([i]) * 32 for i in range(len(survivors))]
    pairs = [(u, v, bytes([7]) * 32) for v in dropped for u in survivors]
    steps: dict[str, Callable[[], object]] = {
        f"hospital: advert (shares for {NUM_SITES})": lambda: build_advert(
            first, keys[first], roster
        ),
        "hospital: mask update": lambda: masked_weights(
            built[first][1], setup, global_w, trained, 100, _config(True).evaluation.histogram_bins
        ),
        "hospital: unmask answer": lambda: build_answer(request, setup, roster, first, keys[first]),
        f"aggregator: reconstruct {len(survivors)} seeds": reconstruct,
        f"aggregator: remove masks ({len(survivors)} self, {len(pairs)} pair)": lambda: (
            masking.remove_masks(total, seeds, pairs, params)
        ),
    }
    return _timing.interleave({name: _timing.timed(step) for name, step in steps.items()}, repeats)


def _spec(array: np.ndarray) -> TensorSpec:
    return TensorSpec(str(array.dtype), tuple(array.shape))


def measure_rounds(
    model: Callable[[], nn.Module], repeats: int
) -> dict[bool, list[tuple[float, dict[str, int]]]]:
    """Secagg off and on, ``repeats`` rounds each, interleaved: (seconds, bytes) per run."""
    runs = _timing.interleave(
        {"off": lambda: measure_round(model, False), "on": lambda: measure_round(model, True)},
        repeats,
    )
    return {False: runs["off"], True: runs["on"]}


def round_table(models: dict[str, Callable[[], nn.Module]], repeats: int) -> Table:
    table = _timing.new_table(
        f"secure aggregation: one round, {NUM_SITES} hospitals (file exchange); "
        "baseline: secagg off, per model"
    )
    for column in ("model", "params", "secagg", "round s min", "round s median", "x off",
                   "update MB", "secagg MB", "total MB"):  # fmt: skip
        table.add_column(column, justify="right")
    for name, model in models.items():
        params = sum(int(p.numel()) for p in model().parameters())
        runs = measure_rounds(model, repeats)
        baseline = [seconds for seconds, _ in runs[False]]
        for secagg in (False, True):
            kinds = {
                kind: _timing.Spread.of([found[kind] for _, found in runs[secagg]]).median
                for kind in runs[secagg][0][1]
            }
            table.add_row(
                name,
                f"{params:,}",
                "on" if secagg else "off",
                *_timing.spread_cells([seconds for seconds, _ in runs[secagg]], baseline, ".2f"),
                f"{kinds['updates'] / 1e6:.3f}",
                f"{kinds['secagg'] / 1e6:.3f}",
                f"{sum(kinds.values()) / 1e6:.3f}",
            )
        table.add_section()
    table.caption = "\n".join(
        [
            _timing.method_note(
                repeats,
                "off",
                "round s: wall seconds from the round's publication to its result.json "
                "(aggregator and hospitals as threads of one process)",
            ),
            "MB: bytes the round wrote to the exchange (file sizes on disk), median over the runs "
            "(JSON documents carry timestamps and nonces, so sizes vary by a few bytes).",
            _timing.load_note(),
        ]
    )
    return table


def steps_table(models: dict[str, Callable[[], nn.Module]], repeats: int) -> Table:
    steps = _timing.new_table(
        f"secure aggregation: time per step, {NUM_SITES} hospitals (min / median ms); "
        "no baseline (steps of one protocol)"
    )
    steps.add_column("step")
    for name in models:
        steps.add_column(f"{name} min / median", justify="right")
    timings = {name: measure_steps(model, repeats) for name, model in models.items()}
    for step in next(iter(timings.values())):
        spreads = [_timing.Spread.of(timings[model][step]) for model in models]
        steps.add_row(step, *(f"{s.min * 1e3:.1f} / {s.median * 1e3:.1f}" for s in spreads))
    steps.caption = "\n".join(
        [
            f"Each step called directly in this process, {repeats} times, interleaved with the "
            f"other steps (rotated order); wall time in this process, on {os.cpu_count()} cores.",
            _timing.load_note(),
        ]
    )
    return steps


def main(quick: bool) -> None:
    configure_logging("console", "WARNING")
    console = _timing.table_console()
    models = dict(list(MODELS.items())[:1]) if quick else MODELS
    tables = [
        round_table(models, REPEATS),
        steps_table(models, _timing.MIN_REPEATS if quick else STEP_REPEATS),
    ]
    for table in tables:
        console.print(table)
    _tables.write_tables("secagg_bench", tables)


if __name__ == "__main__":
    main(quick=False)

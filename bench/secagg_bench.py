"""Secure aggregation's cost per round (issue 10): time and bytes, against plain FedAvg.

Two tables for 20 hospitals:

- **a whole round**: the aggregator (``RoundLoop``) and 20 hospitals (threads running the
  real client loop) over a local-directory exchange, with trivial training, so what differs
  between the two rows of a model is the protocol: round seconds (publish to result) and the
  bytes the round wrote, split into model updates and secagg documents;
- **each step's CPU** (called directly, median of repeats): a hospital's advert (Shamir
  shares of two secrets for every site, 20 encryptions), its masking (quantise + 20 AES-CTR
  mask streams), its unmask answer; the aggregator's reconstruction (Shamir for every site)
  and mask removal.

Masked updates are uint64 (2x a float32 update); the adverts and the unmask request grow as
n^2 (every hospital's shares for every other): 0.36 MB a round for 20 hospitals (18 kB per
hospital), whatever the model.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from torch import nn

from bench._secagg_harness import Logistic, run_round
from fedsilo.engine.logs import configure_logging
from fl_client.secagg_client import build_advert, build_answer, masked_weights
from fl_core.config import FederationConfig, load_config
from fl_core.secagg import masking, shamir, transport
from fl_core.secagg.field import FieldParams, fractional_bits_for
from fl_core.secagg.messages import RosterEntry, SecAggRoster, SecAggSetup, SecAggUnmaskRequest
from fl_core.serialization import TensorSpec

NUM_SITES = 20
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


def _median_s(step: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure_steps(model: Callable[[], nn.Module], repeats: int) -> dict[str, float]:
    """Seconds of each protocol step for one hospital / the aggregator, 20 sites."""
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
    return {
        "hospital: advert (shares for 20)": _median_s(
            lambda: build_advert(first, keys[first], roster), repeats
        ),
        "hospital: mask update": _median_s(
            lambda: masked_weights(built[first][1], setup, global_w, trained, 100), repeats
        ),
        "hospital: unmask answer": _median_s(
            lambda: build_answer(request, setup, roster, first, keys[first]), repeats
        ),
        "aggregator: reconstruct 18 seeds": _median_s(reconstruct, repeats),
        "aggregator: remove masks (18 self, 36 pair)": _median_s(
            lambda: masking.remove_masks(total, seeds, pairs, params), repeats
        ),
    }


def _spec(array: np.ndarray) -> TensorSpec:
    return TensorSpec(str(array.dtype), tuple(array.shape))


def main(quick: bool) -> None:
    configure_logging("console", "WARNING")
    console = Console()
    models = dict(list(MODELS.items())[:1]) if quick else MODELS
    table = Table(title=f"secure aggregation: one round, {NUM_SITES} hospitals (file exchange)")
    for column in ("model", "params", "secagg", "round s", "update MB", "secagg MB", "total MB"):
        table.add_column(column, justify="right")
    for name, model in models.items():
        params = sum(int(p.numel()) for p in model().parameters())
        for secagg in (False, True):
            seconds, kinds = measure_round(model, secagg)
            table.add_row(
                name,
                f"{params:,}",
                "on" if secagg else "off",
                f"{seconds:.2f}",
                f"{kinds['updates'] / 1e6:.3f}",
                f"{kinds['secagg'] / 1e6:.3f}",
                f"{sum(kinds.values()) / 1e6:.3f}",
            )
    console.print(table)
    steps = Table(title=f"secure aggregation: CPU per step, {NUM_SITES} hospitals (median)")
    steps.add_column("step")
    for name in models:
        steps.add_column(name, justify="right")
    timings = {name: measure_steps(model, 3 if quick else 7) for name, model in models.items()}
    for step in next(iter(timings.values())):
        steps.add_row(step, *(f"{timings[m][step] * 1e3:.1f} ms" for m in models))
    console.print(steps)


if __name__ == "__main__":
    main(quick=False)

"""The secure aggregation benchmark measures what it says, on its smallest model."""

import math

from bench import secagg_bench


def test_steps_and_round_give_positive_numbers_and_secagg_bytes() -> None:
    model = secagg_bench.MODELS["mlp 30-32-1"]
    steps = secagg_bench.measure_steps(model, repeats=2)
    assert steps and all(
        len(runs) == 2 and all(math.isfinite(s) and s > 0 for s in runs) for runs in steps.values()
    )
    seconds, kinds = secagg_bench.measure_round(model, secagg=True)
    assert seconds > 0 and kinds["secagg"] > 0 and kinds["updates"] > 0
    _, plain = secagg_bench.measure_round(model, secagg=False)
    assert plain["secagg"] == 0
    assert kinds["updates"] > plain["updates"]  # uint64 ring elements, twice float32

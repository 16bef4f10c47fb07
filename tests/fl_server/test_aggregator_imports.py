"""The aggregator of a numpy strategy starts and aggregates without importing torch.

Importing torch costs an aggregator process about 1.5 CPU-s of its start-up; FedAvg over
safetensors is numpy alone. Run in a fresh interpreter: this test process has torch loaded.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

AGGREGATE_ONE_ROUND = textwrap.dedent(
    """
    import sys

    import numpy as np

    import fedsilo.cli.main  # the `fedsilo server run` entry point and its command table
    from fedsilo.engine.app import DEFAULT_APP
    from fedsilo.engine.services import run_server  # what `server run` calls
    from fedsilo.testing.manifests import admission_context, update_manifest
    from fl_core.admission import check_update_file, update_metadata
    from fl_core.config import FederationConfig
    from fl_core.serialisation import encode_weights
    from fl_server.aggregator import AdmittedUpdate

    assert callable(run_server)
    config = FederationConfig(federation_id="f")
    assert config.strategy.name == "fedavg", config.strategy.name
    aggregator = DEFAULT_APP.aggregator(config)
    start = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}
    aggregator.begin_round(2, start)
    context = admission_context()
    for value, examples, nonce in ((1.0, 10, "ab" * 16), (4.0, 30, "cd" * 16)):
        manifest = update_manifest(num_examples=examples, nonce=nonce)
        tensors = {name: np.full_like(array, value) for name, array in start.items()}
        data = encode_weights(tensors, update_metadata(manifest))
        checked, _, weights = check_update_file(data, "site-a", context)
        aggregator.add_admitted(
            AdmittedUpdate("site-a", checked.num_examples, data, weights)
        )
    mean = aggregator.finish()
    assert np.allclose(mean["w"], 3.25) and np.allclose(mean["b"], 3.25), mean
    print("torch" in sys.modules)
    """
)


def test_a_fedavg_aggregator_imports_and_aggregates_without_torch():
    done = subprocess.run(
        [sys.executable, "-c", AGGREGATE_ONE_ROUND],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "False", "torch was imported by the aggregator's path"

"""A hospital's c_i on disk: survives a restart, is idempotent per round, refuses foreign state."""

from __future__ import annotations

import numpy as np
import pytest

from fl_client.scaffold_state import ControlVariate
from fl_core.errors import ConfigError

TEMPLATE = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}


def _value(x: float) -> dict[str, np.ndarray]:
    return {name: np.full_like(a, x) for name, a in TEMPLATE.items()}


def test_starts_at_zero_and_persists_across_instances(tmp_path):
    first = ControlVariate("site-a", tmp_path)
    assert all(not v.any() for v in first.value_for("fed", 1, TEMPLATE).values())
    first.commit("fed", 1, _value(0.0), _value(1.0))
    first.commit("fed", 2, _value(1.0), _value(2.0))
    restarted = ControlVariate("site-a", tmp_path)
    np.testing.assert_array_equal(restarted.value_for("fed", 3, TEMPLATE)["w"], 2.0)
    # re-training round 2 after a crash starts from c_i before round 2, not after it
    np.testing.assert_array_equal(restarted.value_for("fed", 2, TEMPLATE)["b"], 1.0)
    assert not (tmp_path / "site-a" / "scaffold_control.partial").exists()


def test_memory_only_without_a_state_dir(tmp_path):
    memory = ControlVariate("site-a")
    memory.commit("fed", 1, _value(0.0), _value(5.0))
    np.testing.assert_array_equal(memory.value_for("fed", 2, TEMPLATE)["w"], 5.0)
    assert memory.path is None and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("federation_id", "round_index", "template", "message"),
    [
        ("other", 3, TEMPLATE, "federation 'fed'"),
        ("fed", 1, TEMPLATE, "ahead of round 1"),
        ("fed", 3, {"w": np.zeros((4, 3), np.float32)}, "does not fit the global model"),
    ],
)
def test_foreign_state_is_refused_with_the_fix(
    tmp_path, federation_id, round_index, template, message
):
    ControlVariate("site-a", tmp_path).commit("fed", 2, _value(1.0), _value(2.0))
    with pytest.raises(ConfigError, match=message):
        ControlVariate("site-a", tmp_path).value_for(federation_id, round_index, template)


def test_an_unreadable_state_file_says_what_to_do(tmp_path):
    path = tmp_path / "site-a" / "scaffold_control.safetensors"
    path.parent.mkdir()
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="delete it to restart"):
        ControlVariate("site-a", tmp_path).value_for("fed", 1, TEMPLATE)

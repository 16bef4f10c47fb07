"""The default tabular model: its tensors, and the linear term beside the network."""

from __future__ import annotations

import numpy as np
import torch

from fl_core.models import TabularMLP, load_model_weights, model_weights


def _logits(model: TabularMLP, x: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_without_the_linear_term_the_model_has_the_tensors_it_always_had() -> None:
    names = set(model_weights(TabularMLP(3, (4,))))
    assert names == {
        "input_mean",
        "input_std",
        "risk_intercept",
        "risk_slope",
        "net.0.weight",
        "net.0.bias",
        "net.3.weight",
        "net.3.bias",
    }
    assert "skip.weight" not in model_weights(TabularMLP(3, (), linear_skip=True))


def test_the_linear_term_starts_at_zero_and_adds_to_the_network() -> None:
    x = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
    torch.manual_seed(1)
    plain = TabularMLP(3, (4,))
    torch.manual_seed(1)
    wide = TabularMLP(3, (4,), linear_skip=True)
    weights = model_weights(wide)
    assert weights["skip.weight"].shape == (1, 3) and not weights["skip.weight"].any()
    np.testing.assert_array_equal(_logits(wide, x), _logits(plain, x))
    weights["skip.weight"] = np.array([[2.0, 0.0, -1.0]], np.float32)
    weights["input_mean"] = np.array([1.0, 0.0, 0.0], np.float32)
    load_model_weights(wide, weights)
    z = x - np.array([1.0, 0.0, 0.0], np.float32)
    expected = _logits(plain, z) + 2.0 * z[:, 0] - z[:, 2]
    np.testing.assert_allclose(_logits(wide, x), expected, rtol=1e-5, atol=1e-5)


def test_a_missing_input_adds_nothing_through_the_linear_term() -> None:
    torch.manual_seed(2)
    wide = TabularMLP(2, (4,), linear_skip=True)
    weights = model_weights(wide)
    weights["skip.weight"] = np.array([[5.0, 0.0]], np.float32)
    load_model_weights(wide, weights)
    x = np.array([[np.nan, 1.0]], np.float32)
    torch.manual_seed(2)
    plain = TabularMLP(2, (4,))
    np.testing.assert_allclose(_logits(wide, x), _logits(plain, x), rtol=1e-6)


def test_started_from_an_input_logit_the_model_is_that_prior_model() -> None:
    rng = np.random.default_rng(4)
    x = (rng.normal(size=(50, 3)) * [1.0, 2.0, 3.0]).astype(np.float32)
    x[::7, 1] = np.nan  # no prior prediction for these stays
    mean, std = np.array([0.1, -1.5, 0.4]), np.array([1.2, 2.0, 3.1])
    for hidden in ((4,), ()):
        torch.manual_seed(5)
        model = TabularMLP(3, hidden, logit_offset=True)
        model.set_standardisation(mean, std)
        model.start_from_logit(1)
        expected = np.where(np.isnan(x[:, 1]), -1.5, x[:, 1])
        np.testing.assert_allclose(_logits(model, x), expected, rtol=1e-5, atol=1e-5)
    assert "skip.weight" in model_weights(TabularMLP(3, (4,), logit_offset=True))


def test_loading_weights_is_strict_about_keys_and_shapes_and_copies_in_place() -> None:
    import pytest

    model = TabularMLP(3, (4,))
    weights = model_weights(TabularMLP(3, (4,)))
    parameter = model.net[0].weight
    frozen = {name: value.copy() for name, value in weights.items()}
    for value in frozen.values():
        value.flags.writeable = False  # decoded weights may be read-only views
    load_model_weights(model, frozen)
    assert model.net[0].weight is parameter  # the same tensor, now holding the new values
    np.testing.assert_array_equal(parameter.detach().numpy(), weights["net.0.weight"])
    with pytest.raises(RuntimeError, match=r"missing \['net.3.bias'\]"):
        load_model_weights(model, {k: v for k, v in weights.items() if k != "net.3.bias"})
    with pytest.raises(RuntimeError, match=r"size mismatch for net\.0\.weight"):
        load_model_weights(model, {**weights, "net.0.weight": np.zeros((4, 2), np.float32)})


def test_a_module_that_loads_its_own_way_still_goes_through_load_state_dict() -> None:
    calls: list[str] = []

    class Hooked(TabularMLP):
        def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
            calls.append("hook")
            super()._load_from_state_dict(*args, **kwargs)  # type: ignore[arg-type]

    model = Hooked(2, (3,))
    load_model_weights(model, model_weights(TabularMLP(2, (3,))))
    assert calls == ["hook"]

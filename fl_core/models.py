"""The default model and the bridge between a torch module and the codec's numpy weights."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from fl_core.types import Weights


class TabularMLP(nn.Module):
    """An MLP for a binary outcome that standardises and imputes its own inputs.

    ``input_mean``/``input_std`` are buffers set once from federated moments, so the same
    standardisation travels with the model to every hospital; a NaN input (not measured)
    becomes the mean after standardisation.

    ``risk_intercept``/``risk_slope`` are the Platt scaling of the published model
    (``fl_core.recalibration``): identity while the federation trains, set once on the final
    model from the hospitals' summed validation histograms, and applied in ``forward`` so that
    every consumer of the model file reads calibrated risks.

    ``linear_skip`` adds a linear term of the standardised inputs to the network's logit
    (a wide-and-deep model). A strong input that is already a logit, such as APACHE IVa's
    prediction, then reaches the output through one weight instead of through ReLUs that small
    hospitals' few steps bend it out of shape in; the network learns what the linear term
    misses. The term starts at zero, so round 1's model is the network alone, unless the
    model starts from an input's logit (``start_from_logit``): then round 1's model is that
    prior model exactly (a consortium customising APACHE IVa to its population starts from
    APACHE IVa), and training learns the corrections the hospitals' data support.
    """

    input_mean: torch.Tensor
    input_std: torch.Tensor
    risk_intercept: torch.Tensor
    risk_slope: torch.Tensor

    def __init__(
        self,
        num_features: int,
        hidden_sizes: Sequence[int] = (64, 32),
        dropout: float = 0.1,
        linear_skip: bool = False,
        logit_offset: bool = False,
    ) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.zeros(num_features))
        self.register_buffer("input_std", torch.ones(num_features))
        self.register_buffer("risk_intercept", torch.zeros(1))
        self.register_buffer("risk_slope", torch.ones(1))
        layers: list[nn.Module] = []
        width = num_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.skip: nn.Linear | None = None
        if (linear_skip or logit_offset) and hidden_sizes:
            self.skip = nn.Linear(num_features, 1, bias=False)
            nn.init.zeros_(self.skip.weight)

    def set_standardisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.input_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.input_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    @torch.no_grad()
    def start_from_logit(self, index: int) -> None:
        """Make the model's logit input ``index`` itself (its mean where not measured).

        Call after ``set_standardisation``: the linear term (the output layer, without hidden
        layers) undoes the input's standardisation, ``std * (x - mean) / std + mean``, and the
        network's output layer starts at zero, so its hidden layers learn from round 1 on.
        """
        output = self.net[-1]
        assert isinstance(output, nn.Linear)
        linear = self.skip if self.skip is not None else output
        output.weight.zero_()
        linear.weight.zero_()
        linear.weight[0, index] = self.input_std[index]
        output.bias.fill_(float(self.input_mean[index]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.input_mean, self.input_std
        z = (x - mean) / std
        z = torch.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)
        logits: torch.Tensor = self.net(z).squeeze(-1)
        if self.skip is not None:
            logits = logits + self.skip(z).squeeze(-1)
        return self.risk_intercept + self.risk_slope * logits


def model_weights(model: nn.Module) -> Weights:
    """Every parameter and buffer as a CPU numpy array (what is exchanged)."""
    return {
        name: tensor.detach().cpu().numpy().copy() for name, tensor in model.state_dict().items()
    }


def load_model_weights(model: nn.Module, weights: Weights) -> None:
    """Load ``weights`` into ``model`` (every key, strictly), as ``load_state_dict`` would.

    A hospital loads the global model several times a round; ``load_state_dict`` walks every
    module's loading hooks for what, in a plain module, is one in-place copy per tensor. A
    model with no loading hooks of its own gets exactly those copies (same keys, same shapes,
    the same cast ``load_state_dict`` makes); any other goes through ``load_state_dict``.
    """
    if not _plain_loading(model):
        device = next(model.parameters()).device
        state = {n: torch.from_numpy(np.array(a)).to(device) for n, a in weights.items()}
        model.load_state_dict(state, strict=True)
        return
    targets = model.state_dict()
    if targets.keys() != weights.keys():
        missing = sorted(targets.keys() - weights.keys())
        unexpected = sorted(weights.keys() - targets.keys())
        raise RuntimeError(
            f"weights do not fit the model: missing {missing}, unexpected {unexpected}"
        )
    with torch.no_grad():
        for name, target in targets.items():
            array = np.asarray(weights[name])
            if tuple(array.shape) != tuple(target.shape):
                raise RuntimeError(
                    f"size mismatch for {name}: weights {tuple(array.shape)}, model "
                    f"{tuple(target.shape)}"
                )
            target.copy_(torch.from_numpy(array) if array.flags.writeable else torch.tensor(array))


def _plain_loading(model: nn.Module) -> bool:
    """No module of ``model`` loads its state its own way (hooks or an override)."""
    base = nn.Module._load_from_state_dict
    return not any(
        module._load_state_dict_pre_hooks
        or module._load_state_dict_post_hooks
        or type(module)._load_from_state_dict is not base
        for module in model.modules()
    )

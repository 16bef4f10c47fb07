"""One hospital's SCAFFOLD control variate ``c_i``, kept across rounds and restarts.

``c_i`` is the hospital's own state: it never leaves the hospital (only its delta does, inside
the update). It is held in memory and, when the hospital has a local state folder, written
there as ``<state_dir>/<site_id>/scaffold_control.safetensors`` after each update is safely in
the exchange, so a restarted hospital carries on with the ``c_i`` the aggregator's ``c``
already accounts for.

The file keeps the value before and after the last committed round. A hospital that crashes
after writing its update but before a restart re-trains that round from the value *before*
it (training is seeded per site and round), so re-committing the same round is idempotent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import safetensors.numpy

from fl_core.errors import ConfigError, FedsiloError
from fl_core.serialisation import decode_weights, read_metadata
from fl_core.types import SiteId, Weights

FILE_NAME = "scaffold_control.safetensors"
_BEFORE, _AFTER = "before.", "after."


@dataclass
class ControlVariate:
    """``c_i`` of one site; ``state_dir=None`` keeps it in memory only."""

    site_id: SiteId
    state_dir: Path | None = None
    _before: Weights | None = field(default=None, repr=False)
    _after: Weights | None = field(default=None, repr=False)
    _round_index: int = 0
    _federation_id: str | None = None
    _loaded: bool = False

    @property
    def path(self) -> Path | None:
        return None if self.state_dir is None else self.state_dir / self.site_id / FILE_NAME

    def value_for(self, federation_id: str, round_index: int, template: Weights) -> Weights:
        """``c_i`` to train round ``round_index`` from: zeros before the first commit."""
        self._load_once()
        if self._after is not None and self._federation_id != federation_id:
            raise ConfigError(
                f"site {self.site_id}: {self.path} holds SCAFFOLD state of federation "
                f"{self._federation_id!r}, not {federation_id!r}; give this federation its own "
                "state folder"
            )
        if self._after is None or self._before is None:
            value = {name: np.zeros_like(array) for name, array in template.items()}
        elif self._round_index < round_index:
            value = self._after
        elif self._round_index == round_index:
            value = self._before  # re-training a round already committed (restart)
        else:
            raise ConfigError(
                f"site {self.site_id}: SCAFFOLD state in {self.path} is from round "
                f"{self._round_index}, ahead of round {round_index}; this state folder belongs "
                "to another run of the federation"
            )
        _check_matches(value, template, self.site_id, self.path)
        return value

    def commit(self, federation_id: str, round_index: int, before: Weights, after: Weights) -> None:
        """Keep ``c_i`` after ``round_index`` (its update is in the exchange)."""
        self._before, self._after = before, after
        self._round_index, self._federation_id = round_index, federation_id
        path = self.path
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {_BEFORE + k: np.ascontiguousarray(v) for k, v in before.items()}
        tensors.update({_AFTER + k: np.ascontiguousarray(v) for k, v in after.items()})
        metadata = {"federation_id": federation_id, "round_index": str(round_index)}
        partial = path.with_suffix(".partial")
        safetensors.numpy.save_file(tensors, str(partial), metadata=metadata)
        os.replace(partial, path)  # atomic: a crash leaves the old file or the new one

    def _load_once(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        path = self.path
        if path is None or not path.is_file() or self._after is not None:
            return
        try:
            data = path.read_bytes()
            metadata = read_metadata(data)
            tensors = decode_weights(data)
            round_index = int(metadata["round_index"])
            federation_id = metadata["federation_id"]
        except (OSError, KeyError, ValueError, FedsiloError) as err:
            raise ConfigError(
                f"site {self.site_id}: cannot read SCAFFOLD state {path} ({err}); restore it "
                "from a backup or delete it to restart c_i from zero"
            ) from err
        self._before = {
            k.removeprefix(_BEFORE): v for k, v in tensors.items() if k.startswith(_BEFORE)
        }
        self._after = {
            k.removeprefix(_AFTER): v for k, v in tensors.items() if k.startswith(_AFTER)
        }
        self._round_index, self._federation_id = round_index, federation_id


def _check_matches(value: Weights, template: Weights, site_id: SiteId, path: Path | None) -> None:
    mismatched = sorted(
        name
        for name in template.keys() | value.keys()
        if name not in value
        or name not in template
        or value[name].shape != template[name].shape
        or value[name].dtype != template[name].dtype
    )
    if mismatched:
        raise ConfigError(
            f"site {site_id}: SCAFFOLD state in {path} does not fit the global model "
            f"(tensors {mismatched[:3]}); it belongs to another model; delete it"
        )

"""The aggregator under secure aggregation: a sum of masked updates, unmasked once.

It sums the masked updates as they are admitted (uint64 adds that wrap mod 2**64, one update
in memory at a time) and, at ``finish``, removes the masks, dequantises the weighted sum and
hands the weighted mean to the configured linear strategy (FedAvg, FedAvgM, FedAdam, ...) as a
single update: what the aggregator ever learns is that mean, and the summed evaluations of
the survivors (``fl_core.secagg.masked_evaluation``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from fl_core.errors import AggregationError
from fl_core.secagg import masking
from fl_core.secagg.field import U64, FieldParams, dequantise
from fl_core.secagg.masked_evaluation import (
    EVALUATION_TENSOR,
    VALIDATION_TENSOR,
    MaskedEvaluationSum,
    decode_evaluation,
    segment_spec,
)
from fl_core.secagg.unmasking import UnmaskMaterial
from fl_core.serialisation import TensorSpec, specs_of
from fl_core.types import SiteId, Weights
from fl_server.aggregator import AdmittedUpdate, ServerAggregator

log = structlog.get_logger("fedsilo.server.secagg")


@dataclass(frozen=True)
class _Unmasking:
    """What removes the masks, and the field the sum lives in."""

    params: FieldParams
    material: UnmaskMaterial


class SecAggAggregator(ServerAggregator):
    """Sums masked updates mod 2**b; ``finish`` unmasks the sum and applies ``inner``.

    Each masked update also carries the evaluation segments (``masked_evaluation``): the sum
    splits into the weights part, which ``finish`` aggregates, and the evaluation parts, which
    ``masked_evaluation`` reads for the round's pooled metrics.
    """

    def __init__(self, inner: ServerAggregator, num_bins: int) -> None:
        self.inner = inner
        self.num_bins = num_bins
        self._round = 0
        self._global: Weights = {}
        self._specs: dict[str, TensorSpec] = {}
        self._total: U64 = np.zeros(0, np.uint64)
        self._began = False
        self._summed: dict[SiteId, int] = {}
        self._unmasking: _Unmasking | None = None
        self._unmasked: Weights | None = None  # the unmasked sum, computed once a round

    def initial_global(self, weights: Weights) -> Weights:
        return self.inner.initial_global(weights)

    def set_invited_sites(self, sites: Sequence[SiteId]) -> None:
        self.inner.set_invited_sites(sites)

    def begin_round(self, round_index: int, global_weights: Weights) -> None:
        self._round = round_index
        self._global = global_weights
        self._specs = {
            **{name: TensorSpec("uint64", s.shape) for name, s in specs_of(global_weights).items()},
            EVALUATION_TENSOR: segment_spec(self.num_bins),
            VALIDATION_TENSOR: segment_spec(self.num_bins),
        }
        self._total = np.zeros(masking.flat_size(self._specs), np.uint64)
        self._began = True
        self._summed = {}
        self._unmasking = None
        self._unmasked = None

    def add(self, weights: Weights, num_examples: int) -> None:
        raise AggregationError("secure aggregation adds updates through add_admitted only")

    def add_admitted(self, update: AdmittedUpdate) -> None:
        if not self._began:
            raise AggregationError("add_admitted() before begin_round()")
        if update.site_id in self._summed:
            raise AggregationError(f"site {update.site_id} was added twice this round")
        np.add(self._total, masking.flatten_u64(update.weights), out=self._total)
        self._summed[update.site_id] = update.num_examples

    @property
    def summed_sites(self) -> dict[SiteId, int]:
        return dict(self._summed)

    def resum(self, updates: Callable[[], Sequence[AdmittedUpdate]]) -> None:
        """Start the sum again from exactly the survivors' updates (after a restart admitted
        an update that arrived after the unmask request, which may not count)."""
        self.begin_round(self._round, self._global)
        for update in updates():
            self.add_admitted(update)

    def set_unmask(self, params: FieldParams, material: UnmaskMaterial) -> None:
        if set(material.survivors) != set(self._summed):
            raise AggregationError(
                f"secure aggregation summed {sorted(self._summed)} but the survivors are "
                f"{sorted(material.survivors)}; re-sum first"
            )
        self._unmasking = _Unmasking(params, material)
        self._unmasked = None

    def _unmasked_parts(self) -> tuple[Weights, _Unmasking]:
        """The survivors' summed segments by tensor name, masks removed (once a round)."""
        unmasking = self._unmasking
        if unmasking is None:
            raise AggregationError("finish() before the secure aggregation unmask step")
        if self._unmasked is None:
            material = unmasking.material
            total = masking.remove_masks(
                self._total, material.self_seeds, material.dropped_pairs, unmasking.params
            )
            self._unmasked = masking.unflatten(total, self._specs)
        return self._unmasked, unmasking

    def masked_evaluation(self, tensor: str = EVALUATION_TENSOR) -> MaskedEvaluationSum | None:
        """The evaluations the survivors added to the sum (None: none, or an impossible sum,
        which is logged: a hostile segment spoils the pooled evaluation, never the round);
        ``tensor`` ``VALIDATION_TENSOR``: their validation reports."""
        parts, unmasking = self._unmasked_parts()
        segment = np.asarray(parts[tensor], dtype=np.uint64)
        survivors = len(unmasking.material.survivors)
        found = decode_evaluation(segment, self.num_bins, unmasking.params, survivors)
        if found is None and int(segment[2 * self.num_bins]) != 0:
            log.warning(
                "masked_evaluation_ignored",
                round_index=self._round,
                segment=tensor,
                detail="the summed evaluation segments are impossible for the round's "
                "survivors (a hospital sent a malformed segment); the round's metrics leave "
                "them out",
            )
        return found

    def weighted_mean(self) -> Weights:
        """Global model plus the survivors' weighted mean delta (what the sum reveals)."""
        parts, unmasking = self._unmasked_parts()
        segments = (EVALUATION_TENSOR, VALIDATION_TENSOR)
        model = {name: part for name, part in parts.items() if name not in segments}
        weight = sum(unmasking.material.survivors.values())
        mean_delta = dequantise(masking.flatten_u64(model), unmasking.params) / float(weight)
        specs = {n: TensorSpec("float64", s.shape) for n, s in specs_of(self._global).items()}
        return masking.unflatten(masking.flatten(self._global) + mean_delta, specs)

    def finish(self) -> Weights:
        mean = self.weighted_mean()
        weight = sum(self._unmasking.material.survivors.values()) if self._unmasking else 0
        self.inner.begin_round(self._round, self._global)
        self.inner.add(mean, weight)
        return self.inner.finish()

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)

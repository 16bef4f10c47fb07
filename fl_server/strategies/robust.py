"""Robust aggregation (median, trimmed mean, Krum, Multi-Krum) as ``ServerAggregator`` classes.

The rules (``fl_core.robust_aggregation``) need every update of a round at once, so updates
are spooled to local disk as they are admitted (``spool.UpdateSpool``) and read back chunk by
chunk over the parameters: memory is O(sites x chunk_elements), never O(sites x model).
Krum's distances accumulate chunk by chunk into an ``n x n`` matrix; the average of the chosen
updates is a second pass over their files.
"""

from __future__ import annotations

import numpy as np
import structlog

from fl_core.errors import AggregationError
from fl_core.robust_aggregation import (
    CoordinateRule,
    Float64,
    krum_keep_count,
    krum_scores,
    krum_select,
    pairwise_distances,
    weighted_rows_mean,
)
from fl_core.serialisation import encode_weights, specs_of, view_weights
from fl_core.types import SiteId, Weights
from fl_server.aggregator import AdmittedUpdate, ServerAggregator
from fl_server.strategies.spool import Block, UpdateSpool

log = structlog.get_logger("fedsilo.server")


def _store(out: Weights, block: Block, values: Float64) -> None:
    """Write one block of the result in the model's dtype (integers rounded, not truncated)."""
    target = out[block.name]
    if not np.issubdtype(target.dtype, np.floating):
        values = np.rint(values)
    # the target's own block shape: a 0-d tensor comes back from a file as shape (1,)
    target[block.index] = values.reshape(np.shape(target[block.index])).astype(target.dtype)


class SpooledAggregator(ServerAggregator):
    """Spools admitted updates to disk; subclasses aggregate them in ``_aggregate``."""

    def __init__(self, chunk_elements: int, spool_dir: str | None = None) -> None:
        self.spool = UpdateSpool(chunk_elements, spool_dir)
        self._open = False

    def begin_round(self, round_index: int, global_weights: Weights) -> None:
        self.spool.reset(specs_of(global_weights))
        self._open = True

    def add_admitted(self, update: AdmittedUpdate) -> None:
        if not self._open:
            raise AggregationError("add() before begin_round()")
        self.spool.add(update)

    def add(self, weights: Weights, num_examples: int) -> None:
        """For callers without the file bytes (tests, user code): encode, then spool."""
        data = encode_weights(weights)
        site_id = f"update-{len(self.spool.updates):06d}"
        self.add_admitted(AdmittedUpdate(site_id, num_examples, data, view_weights(data)))

    def finish(self) -> Weights:
        if not self._open:
            raise AggregationError("finish() before begin_round()")
        try:
            return self._aggregate()
        finally:
            self.spool.close()
            self._open = False

    def _aggregate(self) -> Weights:
        raise NotImplementedError

    def _weighted_mean(self, which: list[int]) -> Weights:
        """FedAvg of the spooled updates at positions ``which``, block by block."""
        updates = self.spool.updates
        counts = np.array([updates[i].num_examples for i in which], dtype=np.float64)
        out = self.spool.empty_model()
        with self.spool.open(which) as reader:
            for block in self.spool.blocks():
                _store(out, block, weighted_rows_mean(reader.read(block), counts))
        return out


class CoordinateWiseAggregator(SpooledAggregator):
    """A coordinate-wise rule (median, trimmed mean) applied block by block."""

    def __init__(
        self, rule: CoordinateRule, chunk_elements: int, spool_dir: str | None = None
    ) -> None:
        super().__init__(chunk_elements, spool_dir)
        self.rule = rule

    def _aggregate(self) -> Weights:
        counts = np.array([u.num_examples for u in self.spool.updates], dtype=np.float64)
        out = self.spool.empty_model()
        with self.spool.open() as reader:
            for block in self.spool.blocks():
                _store(out, block, self.rule(reader.read(block), counts))
        return out


class KrumAggregator(SpooledAggregator):
    """Krum (``selected`` 1) or Multi-Krum (``selected`` > 1, default ``n - byzantine``)."""

    def __init__(
        self,
        byzantine: int,
        chunk_elements: int,
        *,
        multi: bool,
        selected: int | None = None,
        spool_dir: str | None = None,
    ) -> None:
        super().__init__(chunk_elements, spool_dir)
        self.byzantine = byzantine
        self.multi = multi
        self.selected = selected
        self.selected_sites: list[SiteId] = []
        """The sites whose updates made the last model (for logs and tests)."""

    def pairwise_distances(self) -> Float64:
        """Squared Euclidean distances between every two updates, accumulated per block."""
        with self.spool.open() as reader:
            blocks = (reader.read(block) for block in self.spool.blocks())
            return pairwise_distances(blocks, len(self.spool.updates))

    def _aggregate(self) -> Weights:
        updates = self.spool.updates
        n = len(updates)
        keep = krum_keep_count(
            num_updates=n, byzantine=self.byzantine, multi=self.multi, selected=self.selected
        )
        if keep == n:  # everyone is kept: no scoring pass needed (FedAvg)
            chosen = list(range(n))
        else:
            chosen = krum_select(krum_scores(self.pairwise_distances(), self.byzantine), keep)
        self.selected_sites = [updates[i].site_id for i in chosen]
        excluded = sorted({u.site_id for u in updates} - set(self.selected_sites))
        log.info("krum_selected", selected=len(chosen), excluded_sites=excluded)
        return self._weighted_mean(chosen)

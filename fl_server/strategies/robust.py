"""Aggregation rules robust to a minority of hostile hospitals: median, trimmed mean, Krum.

All of them need every update of a round at once, so updates are spooled to local disk as
they are admitted (``spool.UpdateSpool``) and read back chunk by chunk over the parameters:
memory is O(sites x chunk_elements), never O(sites x model).

- Coordinate-wise median (Yin et al. 2018) is unweighted on purpose: a hospital's
  ``num_examples`` is its own claim, and weighting by it would let one hostile site buy the
  median. The trimmed mean drops the extremes unweighted, then weights what is left by
  ``num_examples`` (every kept value lies within the honest range, see
  ``trimmed_mean_rule``).
- Krum (Blanchard et al. 2017) scores each update by the summed squared distances to its
  ``n - f - 2`` nearest peers and keeps the lowest; Multi-Krum keeps the ``selected`` lowest
  (default ``n - f``) and averages them weighted by ``num_examples`` (an honest minority
  that passed the selection is weighted as in FedAvg). Distances accumulate chunk by chunk
  into an ``n x n`` matrix; the average is a second pass over the chosen files.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import structlog

from fl_core.config import FederationConfig, KrumStrategy, MedianStrategy, TrimmedMeanStrategy
from fl_core.errors import AggregationError, ConfigError
from fl_core.serialization import encode_weights, specs_of, view_weights
from fl_core.types import SiteId, Weights
from fl_server.aggregator import AdmittedUpdate, ServerAggregator
from fl_server.strategies import register
from fl_server.strategies.spool import Block, UpdateSpool

log = structlog.get_logger("fedsilo.server")

Float64 = npt.NDArray[np.float64]
CoordinateRule = Callable[[Float64, Float64], Float64]
"""``(updates x elements, num_examples per update) -> (elements,)``: one block of every
update to one block of the result."""


def coordinate_median(rows: Float64, counts: Float64) -> Float64:
    """Unweighted: ``num_examples`` is a hospital's own claim and must not buy the median."""
    out: Float64 = np.median(rows, axis=0)
    return out


def trimmed_mean_rule(trim_fraction: float) -> CoordinateRule:
    """Per coordinate, drop the ``floor(trim_fraction * n)`` smallest and largest values and
    average the rest weighted by ``num_examples``.

    Weighting only what survived the trim keeps FedAvg's convergence on hospitals of very
    different sizes, and stays safe: with at most ``k`` hostile updates every kept value lies
    between two honest ones, so however many examples a hostile site claims, each coordinate
    stays inside the honest range.
    """
    if not 0 <= trim_fraction < 0.5:
        raise ConfigError("strategy.trim_fraction must be in [0, 0.5)")

    def rule(rows: Float64, counts: Float64) -> Float64:
        n = rows.shape[0]
        k = int(trim_fraction * n)
        # stable: tied values keep site_id order, so the result never depends on arrival
        order = np.argsort(rows, axis=0, kind="stable")[k : n - k]
        kept = np.take_along_axis(rows, order, axis=0)
        weights = counts[order]
        out: Float64 = (kept * weights).sum(axis=0) / weights.sum(axis=0)
        return out

    return rule


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
        weights = counts / counts.sum()
        out = self.spool.empty_model()
        with self.spool.open(which) as reader:
            for block in self.spool.blocks():
                rows = reader.read(block)
                _store(out, block, weights @ rows)
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
                rows = reader.read(block)
                _store(out, block, self.rule(rows, counts))
        return out


def krum_scores(distances: Float64, byzantine: int) -> Float64:
    """Each update's summed squared distance to its ``n - f - 2`` nearest other updates."""
    n = distances.shape[0]
    neighbours = n - byzantine - 2
    if neighbours < 1 or n < 2 * byzantine + 3:
        raise AggregationError(
            f"krum with strategy.byzantine {byzantine} needs at least {2 * byzantine + 3} "
            f"accepted updates, the round has {n}; raise round.min_sites or lower byzantine"
        )
    others = np.sort(distances + np.diag(np.full(n, np.inf)), axis=1)[:, :neighbours]
    out: Float64 = others.sum(axis=1)
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
        n = len(self.spool.updates)
        distances = np.zeros((n, n), dtype=np.float64)
        with self.spool.open() as reader:
            for block in self.spool.blocks():
                rows = reader.read(block)
                _add_block_distances(distances, rows)
        np.maximum(distances, 0.0, out=distances)
        np.fill_diagonal(distances, 0.0)
        return distances

    def _aggregate(self) -> Weights:
        updates = self.spool.updates
        n = len(updates)
        keep = 1
        if self.multi:
            keep = self.selected if self.selected is not None else n - self.byzantine
            if not 1 <= keep <= n:
                raise AggregationError(
                    f"multikrum strategy.selected {keep} must be between 1 and the {n} "
                    "accepted updates of this round; lower it"
                )
        if keep == n:  # everyone is kept: no scoring pass needed (FedAvg)
            chosen = list(range(n))
        else:
            scores = krum_scores(self.pairwise_distances(), self.byzantine)
            # stable: equal scores keep site_id order, so the choice never depends on arrival
            chosen = sorted(np.argsort(scores, kind="stable")[:keep].tolist())
        self.selected_sites = [updates[i].site_id for i in chosen]
        excluded = sorted({u.site_id for u in updates} - set(self.selected_sites))
        log.info("krum_selected", selected=len(chosen), excluded_sites=excluded)
        return self._weighted_mean(chosen)


def _add_block_distances(distances: Float64, rows: Float64) -> None:
    """Add one block's squared distances: ``|a|^2 + |b|^2 - 2ab`` after centring the block
    (centring leaves distances unchanged and keeps the subtraction from cancelling)."""
    centred = rows - rows.mean(axis=0)
    squares = np.einsum("ij,ij->i", centred, centred)
    distances += squares[:, None] + squares[None, :] - 2.0 * (centred @ centred.T)


def _median(config: FederationConfig) -> ServerAggregator:
    strategy = config.strategy
    if not isinstance(strategy, MedianStrategy):
        raise ConfigError(f"strategy {strategy.name!r} is not median")
    return CoordinateWiseAggregator(coordinate_median, strategy.chunk_elements)


def _trimmed_mean(config: FederationConfig) -> ServerAggregator:
    strategy = config.strategy
    if not isinstance(strategy, TrimmedMeanStrategy):
        raise ConfigError(f"strategy {strategy.name!r} is not trimmed_mean")
    return CoordinateWiseAggregator(
        trimmed_mean_rule(strategy.trim_fraction), strategy.chunk_elements
    )


def _krum(config: FederationConfig) -> ServerAggregator:
    strategy = config.strategy
    if not isinstance(strategy, KrumStrategy):
        raise ConfigError(f"strategy {strategy.name!r} is not krum or multikrum")
    needed = 2 * strategy.byzantine + 3
    if config.round.min_sites < needed:
        raise ConfigError(
            f"strategy {strategy.name} with byzantine {strategy.byzantine} needs "
            f"round.min_sites >= {needed} (n > 2f + 2); raise round.min_sites or lower "
            "strategy.byzantine"
        )
    return KrumAggregator(
        strategy.byzantine,
        strategy.chunk_elements,
        multi=strategy.name == "multikrum",
        selected=strategy.selected,
    )


register("median", _median)
register("trimmed_mean", _trimmed_mean)
register("krum", _krum)
register("multikrum", _krum)

"""Aggregation rules robust to a minority of hostile hospitals: median, trimmed mean, Krum.

FedAvg lets one hospital move the global model arbitrarily far; these rules bound what a
minority can do. They are pure functions over one block of every update at a time (a
``(updates x elements)`` float64 array), so the aggregator can stream a model of any size
through them chunk by chunk (``fl_server.strategies.robust``), and a test can check each one
on small arrays.

- Coordinate-wise median (Yin et al. 2018) is unweighted on purpose: a hospital's
  ``num_examples`` is its own claim, and weighting by it would let one hostile site buy the
  median.
- The trimmed mean drops the extremes unweighted, then weights what is left by
  ``num_examples`` (every kept value lies within the honest range, see ``trimmed_mean``).
- Krum (Blanchard et al. 2017) scores each update by the summed squared distances to its
  ``n - f - 2`` nearest peers and keeps the lowest; Multi-Krum keeps the ``selected`` lowest
  (default ``n - f``) and averages them weighted by ``num_examples``.

Rows come in ``site_id`` order and ties are broken stably, so a result never depends on the
order updates arrived in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt

from fl_core.errors import AggregationError, ConfigError

Float64 = npt.NDArray[np.float64]
CoordinateRule = Callable[[Float64, Float64], Float64]
"""``(updates x elements, num_examples per update) -> (elements,)``: one block of every
update to one block of the result."""


def _check_rows(rows: Float64, counts: Float64) -> None:
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise AggregationError(
            f"a robust rule needs a non-empty (updates x elements) block, got shape "
            f"{rows.shape}; check round.min_sites"
        )
    if counts.shape != (rows.shape[0],):
        raise AggregationError(
            f"{rows.shape[0]} updates but {counts.shape} num_examples; pass one per update"
        )


def coordinate_median(rows: Float64, counts: Float64) -> Float64:
    """Per coordinate, the median of the updates, unweighted.

    ``num_examples`` is a hospital's own claim and must not buy the median, so ``counts`` is
    accepted (every ``CoordinateRule`` takes it) and ignored.
    """
    _check_rows(rows, counts)
    out: Float64 = np.median(rows, axis=0)
    return out


def trimmed_mean(rows: Float64, counts: Float64, *, trim_fraction: float) -> Float64:
    """Per coordinate, drop the ``floor(trim_fraction * n)`` smallest and largest values and
    average the rest weighted by ``num_examples``.

    Weighting only what survived the trim keeps FedAvg's convergence on hospitals of very
    different sizes, and stays safe: with at most ``k`` hostile updates every kept value lies
    between two honest ones, so however many examples a hostile site claims, each coordinate
    stays inside the honest range. Equal values of different weights are trimmed in row
    order, so pass rows in a fixed order (the aggregator passes them in ``site_id`` order).
    """
    if not 0 <= trim_fraction < 0.5:
        raise ConfigError("strategy.trim_fraction must be in [0, 0.5)")
    _check_rows(rows, counts)
    n = rows.shape[0]
    k = int(trim_fraction * n)
    # stable: tied values keep site_id order, so the result never depends on arrival
    order = np.argsort(rows, axis=0, kind="stable")[k : n - k]
    kept = np.take_along_axis(rows, order, axis=0)
    weights = counts[order]
    out: Float64 = (kept * weights).sum(axis=0) / weights.sum(axis=0)
    return out


def trimmed_mean_rule(trim_fraction: float) -> CoordinateRule:
    """``trimmed_mean`` with its fraction fixed (checked now, not at the first block)."""
    if not 0 <= trim_fraction < 0.5:
        raise ConfigError("strategy.trim_fraction must be in [0, 0.5)")

    def rule(rows: Float64, counts: Float64) -> Float64:
        return trimmed_mean(rows, counts, trim_fraction=trim_fraction)

    return rule


def weighted_rows_mean(rows: Float64, counts: Float64) -> Float64:
    """FedAvg of one block: the rows' mean weighted by ``num_examples``."""
    _check_rows(rows, counts)
    weights = counts / counts.sum()
    out: Float64 = weights @ rows
    return out


def block_distances(rows: Float64) -> Float64:
    """One block's contribution to the squared distances between every two updates.

    ``|a|^2 + |b|^2 - 2ab`` after centring the block: centring leaves distances unchanged and
    keeps the subtraction from cancelling.
    """
    centred = rows - rows.mean(axis=0)
    squares = np.einsum("ij,ij->i", centred, centred)
    out: Float64 = squares[:, None] + squares[None, :] - 2.0 * (centred @ centred.T)
    return out


def pairwise_distances(blocks: Iterable[Float64], num_updates: int) -> Float64:
    """Squared Euclidean distances between every two updates, summed block by block."""
    distances = np.zeros((num_updates, num_updates), dtype=np.float64)
    for rows in blocks:
        distances += block_distances(rows)
    np.maximum(distances, 0.0, out=distances)  # rounding can leave -1e-12 where 0 is meant
    np.fill_diagonal(distances, 0.0)
    return distances


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


def krum_keep_count(*, num_updates: int, byzantine: int, multi: bool, selected: int | None) -> int:
    """How many updates Krum (1) or Multi-Krum (``selected``, default ``n - f``) keeps."""
    if not multi:
        return 1
    keep = selected if selected is not None else num_updates - byzantine
    if not 1 <= keep <= num_updates:
        raise AggregationError(
            f"multikrum strategy.selected {keep} must be between 1 and the {num_updates} "
            "accepted updates of this round; lower it"
        )
    return keep


def krum_select(scores: Float64, keep: int) -> list[int]:
    """Positions of the ``keep`` lowest scores, in position order.

    Stable: equal scores keep ``site_id`` order, so the choice never depends on arrival.
    """
    chosen: list[int] = np.argsort(scores, kind="stable")[:keep].tolist()
    return sorted(chosen)

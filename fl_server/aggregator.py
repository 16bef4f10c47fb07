"""``ServerAggregator``: what a user subclasses to change how updates become a model.

The round loop admits each update and hands it over one at a time; an aggregator never sees
the exchange. Server-side state (e.g. optimizer moments) goes through ``state_dict`` into
``state.json`` so that it survives a restart.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fl_core.aggregation import StreamingWeightedMean
from fl_core.errors import AggregationError
from fl_core.serialisation import specs_of
from fl_core.types import SiteId, Weights


@dataclass(frozen=True)
class AdmittedUpdate:
    """One admitted update as the round loop holds it: the verified file bytes and their view.

    ``weights`` are zero-copy views of ``data``; an aggregator that needs every update at
    once (median, Krum) spools ``data`` to local disk and reads slices back lazily rather
    than keeping all the views alive.
    """

    site_id: str
    num_examples: int
    data: bytes
    weights: Weights


class ServerAggregator(ABC):
    """How the admitted updates of a round become the next global model: subclass this.

    The round loop calls, once per round and in this order: ``set_invited_sites``,
    ``begin_round`` (with the model the round started from), ``add_admitted`` for every
    admitted update, then ``finish``. Updates arrive already verified (names, shapes, dtypes,
    finite values), so an aggregator only does the arithmetic; it never sees the exchange.

    A crash may come at any point of a round. A restarted aggregator gets its state back
    through ``load_state_dict`` and the round loop replays the round's admitted updates into
    ``begin_round``/``add_admitted``; if the round had closed, it checks that ``finish`` gives
    the model ``result.json`` records. So the next model must depend only on the saved state,
    the global model and the set of admitted updates: never on arrival order, a fresh random
    draw, or anything held only in memory.

    Implement ``begin_round``, ``add`` and ``finish``. Override ``state_dict`` and
    ``load_state_dict`` if anything must outlive a round (e.g. optimizer moments), and
    ``add_admitted`` to use the file bytes (e.g. spool them to disk).
    """

    checks_finite: bool = False
    """True where ``add`` itself refuses an update holding NaN or Inf, raising
    ``fl_core.errors.NonFiniteUpdateError`` (the round loop then rejects it as
    ``non_finite``, begins the round again and re-adds the accepted updates), so admission
    skips its own scan. Otherwise every update arrives already checked to be finite."""

    def initial_global(self, weights: Weights) -> Weights:
        """Round 1's model from the initial weights; a strategy may add tensors (SCAFFOLD's
        zero control variates). The default is the identity."""
        return weights

    def set_invited_sites(self, sites: Sequence[SiteId]) -> None:  # noqa: B027 (optional hook)
        """The sites invited to the round about to begin (SCAFFOLD divides by their number).

        Called before ``begin_round``; the default ignores it.
        """

    @abstractmethod
    def begin_round(self, round_index: int, global_weights: Weights) -> None:
        """Reset per-round accumulators; ``global_weights`` is the model this round started from."""

    @abstractmethod
    def add(self, weights: Weights, num_examples: int) -> None:
        """Take one admitted update (already verified: names, shapes, dtypes, finite)."""

    def add_admitted(self, update: AdmittedUpdate) -> None:
        """What the round loop calls; streaming aggregators need only ``add``."""
        self.add(update.weights, update.num_examples)

    @abstractmethod
    def finish(self) -> Weights:
        """The next global model."""

    def state_dict(self) -> dict[str, Any]:
        """What must survive a restart, as JSON-ready values (saved in ``state.json``).

        Called when the federation starts and after every ``finish``; the result is saved
        with the next round, so a restarted aggregator resumes exactly where the last finished
        round left it. Tensors go through ``fl_server.strategies.tensor_state``. The default
        keeps nothing.
        """
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned; called at every (re)start of the loop.

        Refuse (``AggregationError``, naming the fix) a state this aggregator did not write,
        rather than guess: a wrong resume would silently change the model. The default
        accepts only an empty state.
        """
        if state:
            raise AggregationError(f"{type(self).__name__} keeps no state but got {sorted(state)}")


class FedAvgAggregator(ServerAggregator):
    """FedAvg weighted by ``num_examples``, streamed: one update in memory at a time."""

    checks_finite = True  # StreamingWeightedMean scans each slice as it adds it

    def __init__(self) -> None:
        self._mean: StreamingWeightedMean | None = None

    def begin_round(self, round_index: int, global_weights: Weights) -> None:
        self._mean = StreamingWeightedMean(specs_of(global_weights))

    def add(self, weights: Weights, num_examples: int) -> None:
        if self._mean is None:
            raise AggregationError("add() before begin_round()")
        self._mean.add(weights, float(num_examples))

    def finish(self) -> Weights:
        if self._mean is None:
            raise AggregationError("finish() before begin_round()")
        return self._mean.result()

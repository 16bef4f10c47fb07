"""What a training round's aggregation protocol adds to the round: a phase of the round.

The round loop runs every round the same way: open, collect, close. A protocol such as
secure aggregation changes what a round admits and what closing it needs: it opens the round
(which may mean waiting for the hospitals' keys), says which invited sites it already refused,
runs its own step between collection and closing (the unmask), and hands closing the sums it
alone can read. A protocol plugs in here; the round loop has no branch for any of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from fl_core.admission import AdmissionContext
from fl_core.errors import UpdateRejectedError
from fl_core.exchange.manifests import FederationState, GlobalManifest
from fl_core.secagg.masked_evaluation import MaskedEvaluationSum
from fl_core.types import SiteId
from fl_server.aggregator import ServerAggregator
from fl_server.state_keeper import StateKeeper


class ProtocolRound(Protocol):
    """One training round as its protocol runs it, from opening to closing."""

    @property
    def context(self) -> AdmissionContext:
        """What admission expects of this round's answers (tensors, participants)."""
        ...

    @property
    def refused(self) -> Mapping[SiteId, UpdateRejectedError]:
        """Invited sites the protocol left out while opening, and why (rejections)."""
        ...

    def before_close(self, state: FederationState, keeper: StateKeeper) -> FederationState:
        """The protocol's step after collection (it may change decisions)."""
        ...

    def masked_evaluation(self) -> MaskedEvaluationSum | None:
        """The evaluations summed where only their sum can be read (None: none)."""
        ...

    def masked_validation(self) -> MaskedEvaluationSum | None:
        """The validation reports summed where only their sum can be read (None: none)."""
        ...


class AggregationProtocol(Protocol):
    """How the updates of a training round reach the aggregator."""

    caps_weights: bool
    """Whether the aggregator caps a site's weight (``round.max_weight_share``); under
    secure aggregation each hospital weights its own update and the sum hides the weights."""

    @property
    def aggregator(self) -> ServerAggregator:
        """The aggregator the round loop adds admitted updates to."""
        ...

    def open(
        self,
        state: FederationState,
        manifest: GlobalManifest,
        context: AdmissionContext,
        keeper: StateKeeper,
    ) -> ProtocolRound:
        """A training round opened (its global model already published)."""
        ...


class ClearRound:
    """A round whose answers are read in the clear: nothing to add."""

    def __init__(self, context: AdmissionContext) -> None:
        self._context = context

    @property
    def context(self) -> AdmissionContext:
        return self._context

    @property
    def refused(self) -> Mapping[SiteId, UpdateRejectedError]:
        return {}

    def before_close(self, state: FederationState, keeper: StateKeeper) -> FederationState:
        return state

    def masked_evaluation(self) -> MaskedEvaluationSum | None:
        return None

    def masked_validation(self) -> MaskedEvaluationSum | None:
        return None


class InTheClear:
    """Updates read and summed in the clear, one at a time (FedAvg and every strategy)."""

    caps_weights = True

    def __init__(self, aggregator: ServerAggregator) -> None:
        self._aggregator = aggregator

    @property
    def aggregator(self) -> ServerAggregator:
        return self._aggregator

    def open(
        self,
        state: FederationState,
        manifest: GlobalManifest,
        context: AdmissionContext,
        keeper: StateKeeper,
    ) -> ProtocolRound:
        return ClearRound(context)

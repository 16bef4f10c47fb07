"""What the round loop tells an observer as a round goes: the seam for a user interface."""

from __future__ import annotations

from fl_core.exchange.manifests import Decision, GlobalManifest, RoundResult


class RoundEvents:
    """What the round loop tells an observer; subclass it for a user interface or a sink.

    Every hook runs on the aggregator's thread between two steps of the round, so it must
    return quickly and must not raise: the CLI's progress bar, the TensorBoard sink and the
    simulation's per-round rows are subclasses. The default does nothing.
    """

    def round_opened(self, manifest: GlobalManifest) -> None:
        """A round's global model is published (or found, on resume)."""

    def decided(self, round_index: int, decision: Decision) -> None:
        """One site's answer was accepted or rejected."""

    def round_closed(self, result: RoundResult) -> None:
        """A round's result.json is written."""

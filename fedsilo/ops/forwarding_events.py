"""Round hooks that pass every event on to the events they wrap (the CLI's progress bar).

A sink (TensorBoard, MLflow) adds what it records on top and leaves the wrapped events to
draw and print as they would without it; it receives its own metrics rows through ``row_ready``.
"""

from __future__ import annotations

from fedsilo.engine.federation import SimulationEvents
from fl_core.exchange.manifests import Decision, GlobalManifest, RoundResult


class ForwardingEvents(SimulationEvents):
    """``inner``'s hooks, each called first; ``row_ready`` is the subclass's own."""

    def __init__(self, inner: SimulationEvents) -> None:
        super().__init__(inner.rounds)
        self.inner = inner

    def round_opened(self, manifest: GlobalManifest) -> None:
        self.inner.round_opened(manifest)

    def decided(self, round_index: int, decision: Decision) -> None:
        self.inner.decided(round_index, decision)

    def round_closed(self, result: RoundResult) -> None:
        self.inner.round_closed(result)
        super().round_closed(result)

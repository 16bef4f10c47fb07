"""Per-round metrics to TensorBoard event files (``fedsilo simulate --tensorboard DIR``).

The events are written by ``torch.utils.tensorboard.SummaryWriter``, the writer TensorBoard's
own maintainers keep compatible, never by hand.
"""

from __future__ import annotations

from pathlib import Path

from fedsilo.engine.federation import SimulationEvents
from fedsilo.engine.metrics_row import MetricsRow
from fedsilo.ops.forwarding_events import ForwardingEvents


class TensorBoardEvents(ForwardingEvents):
    """Writes each round's metrics row as scalars and passes every hook on to ``inner``."""

    def __init__(self, log_dir: Path, inner: SimulationEvents) -> None:
        super().__init__(inner)
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = log_dir
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def row_ready(self, row: MetricsRow) -> None:
        step = row.round
        for name, number in row.scalars().items():
            self.writer.add_scalar(f"federation/{name}", number, step)
        for name, auroc in row.reference_auroc.items():
            if auroc is not None:
                self.writer.add_scalar(f"reference_auroc/{name}", auroc, step)
        self.writer.flush()
        if step >= self.rounds:  # the last training round's row: nothing more will come
            self.writer.close()

    def close(self) -> None:
        self.writer.close()


def with_tensorboard(log_dir: Path, inner: SimulationEvents) -> SimulationEvents:
    """``inner``'s hooks plus per-round TensorBoard scalars in ``log_dir``."""
    return TensorBoardEvents(log_dir, inner)

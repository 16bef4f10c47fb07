"""Wake-ups between the aggregator and the hospital workers of one simulation.

The exchange stays the only source of truth: a worker still reads the global model from it,
and the aggregator still lists the answers in it. What this adds is latency: without it each
side learns of the other's write on its next poll, with the cores idle meanwhile, every round
(on a federation of many small hospitals the polls took longer than the training; ``bench
scale_bench`` measures it). So the aggregator announces each opened round and each worker says
when it has answered a round; polling remains the fallback (a missed or early wake-up costs
nothing but a re-check).
"""

from __future__ import annotations

from multiprocessing.context import BaseContext
from multiprocessing.queues import Queue
from typing import Any

ANSWERED = "answered"
"""Kind of the worker's message on the reports queue, which the aggregator's sleep waits on."""

Report = tuple[str, int, Any]
"""What a worker tells the aggregator: (``ANSWERED``, "done" or "error"; worker; payload)."""


class RoundSignal:
    """The highest round whose global model is published, shared by the simulation's processes.

    Created by the aggregator from the workers' multiprocessing context and handed to each worker
    at start, as multiprocessing requires of its synchronisation objects.
    """

    def __init__(self, context: BaseContext) -> None:
        self._published = context.Value("q", 0, lock=False)
        self._changed = context.Condition()

    def publish(self, round_index: int) -> None:
        """The aggregator: round ``round_index``'s global model is in the exchange."""
        with self._changed:
            if round_index > self._published.value:
                self._published.value = round_index
            self._changed.notify_all()

    def wait_published(self, round_index: int, seconds: float) -> None:
        """A worker's poll sleep: up to ``seconds``, less once ``round_index`` is published."""
        with self._changed:
            self._changed.wait_for(lambda: self._published.value >= round_index, seconds)


class WorkerNotifier:
    """A simulation worker's ``fl_client.hospital.RoundNotifier``."""

    def __init__(self, signal: RoundSignal, reports: Queue[Report], worker: int) -> None:
        self.signal = signal
        self.reports = reports
        self.worker = worker

    def wait_published(self, round_index: int, seconds: float) -> None:
        self.signal.wait_published(round_index, seconds)

    def answered(self, round_index: int) -> None:
        self.reports.put((ANSWERED, self.worker, round_index))

"""What earlier rounds decided that later rounds need: replay protection and early stopping.

The nonces and update digests accepted in earlier rounds are what replay protection refuses;
the summed validation losses of earlier training rounds are what early stopping follows. Each
``result.json`` is read once per process, not once per later round: round 1000 of a long
federation would otherwise re-read 999 results of 208 decisions each, every round.
"""

from __future__ import annotations

from fl_core.exchange.manifests import RoundResult
from fl_core.exchange.protocol import Exchange
from fl_server.validation_round import stopping_loss


class RoundHistory:
    """The accepted nonces and digests, and the validation losses, of the rounds so far."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self._nonces: set[str] = set()
        self._digests: set[str] = set()
        self._losses: list[float] = []
        self._through = 0  # rounds whose results were read

    def _read_until(self, round_index: int) -> None:
        for earlier in range(self._through + 1, round_index):
            result = self.exchange.read_result(earlier)
            if result is not None:
                self._remember(result)
        self._through = max(self._through, round_index - 1)

    def _remember(self, result: RoundResult) -> None:
        for decision in result.accepted:
            if decision.nonce:
                self._nonces.add(decision.nonce)
            if decision.sha256:
                self._digests.add(decision.sha256)
        if result.task == "train" and (loss := stopping_loss(result.evaluation)) is not None:
            self._losses.append(loss)

    def accepted_before(self, round_index: int) -> tuple[frozenset[str], frozenset[str]]:
        """Nonces and digests accepted in rounds ``1 .. round_index - 1``."""
        self._read_until(round_index)
        return frozenset(self._nonces), frozenset(self._digests)

    def losses_before(self, round_index: int) -> list[float]:
        """The validation losses early stopping follows, of training rounds before
        ``round_index`` that have one, in round order."""
        self._read_until(round_index)
        return list(self._losses)

"""Nonces and update digests accepted in earlier rounds: what replay protection refuses.

Each ``result.json`` is read once per process, not once per later round: round 1000 of a long
federation would otherwise re-read 999 results of 208 decisions each.
"""

from __future__ import annotations

from fl_core.exchange.protocol import Exchange


class AcceptedHistory:
    """The accepted nonces and sha256 digests of the rounds before a given one."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self._nonces: set[str] = set()
        self._digests: set[str] = set()
        self._through = 0  # rounds whose results are in the two sets

    def before(self, round_index: int) -> tuple[frozenset[str], frozenset[str]]:
        """Nonces and digests accepted in rounds ``1 .. round_index - 1``."""
        for earlier in range(self._through + 1, round_index):
            result = self.exchange.read_result(earlier)
            if result is None:
                continue
            for decision in result.accepted:
                if decision.nonce:
                    self._nonces.add(decision.nonce)
                if decision.sha256:
                    self._digests.add(decision.sha256)
        self._through = max(self._through, round_index - 1)
        return frozenset(self._nonces), frozenset(self._digests)

"""Fit the round quorum to secure aggregation's threshold, before any training starts.

A secure-aggregation round unmasks the sum only from at least ``t`` masked updates
(``privacy.secagg.threshold``, default ``n - floor(n/3)``). A quorum ``round.min_sites``
below ``t`` lets a round close with too few updates, which then fails instead of waiting
for more; the aggregator would warn about it every round. Like Krum's fitted quorum, a
quorum the user left at its default is raised to ``t`` with one note, and a quorum the user
chose below ``t`` is refused, naming the flag to change.
"""

from __future__ import annotations

from fedsilo.engine.strategy_fit import raised_quorum
from fl_core.config import FederationConfig


def secagg_threshold(config: FederationConfig, hospitals: int) -> int:
    """``t`` for ``hospitals`` sites: the configured threshold or ``n - floor(n/3)``."""
    return config.privacy.secagg.threshold or hospitals - hospitals // 3


def fit_secagg_quorum(
    config: FederationConfig, hospitals: int | None
) -> tuple[FederationConfig, list[str]]:
    """The config with ``round.min_sites`` at least secure aggregation's threshold, and notes.

    Raises ``ConfigError`` (exit 2) when the user set a quorum below the threshold.
    """
    if not config.privacy.secagg.enabled or hospitals is None:
        return config, []
    threshold = secagg_threshold(config, hospitals)
    quorum = config.round.min_sites
    return raised_quorum(
        config,
        threshold,
        too_low=f"--min-sites {quorum} is below secure aggregation's threshold {threshold} for "
        f"{hospitals} hospitals: a round that closes with fewer than {threshold} masked "
        f"updates fails instead of waiting for them; use --min-sites {threshold} or more",
        note=f"secure aggregation unmasks a round only from {threshold} of {hospitals} "
        f"hospitals: quorum round.min_sites raised from {quorum} to {threshold} (--min-sites "
        "to set it)",
    )

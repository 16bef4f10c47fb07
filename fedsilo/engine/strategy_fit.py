"""Fit a strategy's defaults to the federation at hand, before any training starts.

Krum and Multi-Krum tolerate ``f`` hostile hospitals (``strategy.byzantine``, default 1) only
when at least ``2f + 3`` updates are aggregated in a round, so they need ``round.min_sites``
that high; its default (2) suits FedAvg. Rather than let the aggregator refuse the run after
the hospitals have started, the commands raise a quorum the user left at its default (and
say so), and refuse, naming the flag to change, what no quorum can fix: a federation with
fewer hospitals than Krum needs, or a ``--min-sites`` the user chose too low.
"""

from __future__ import annotations

import math
from pathlib import Path

from fl_core.config import FederationConfig, KrumStrategy, TrimmedMeanStrategy
from fl_core.errors import ConfigError


def krum_quorum(byzantine: int) -> int:
    """Updates Krum needs in a round to tolerate ``byzantine`` hostile ones (n > 2f + 2)."""
    return 2 * byzantine + 3


def fit_strategy(
    config: FederationConfig, hospitals: int | None
) -> tuple[FederationConfig, list[str]]:
    """The config with a valid quorum for its strategy, and a line per change made.

    ``hospitals`` is the number of hospitals that will be invited (None when unknown).
    Raises ``ConfigError`` (exit 2) naming the flag to change when no setting fits.
    """
    strategy = config.strategy
    if isinstance(strategy, TrimmedMeanStrategy):
        return config, _trimmed_mean_notes(strategy, hospitals)
    if not isinstance(strategy, KrumStrategy):
        return config, []
    needed = krum_quorum(strategy.byzantine)
    name, f = strategy.name, strategy.byzantine
    if hospitals is not None and hospitals < needed:
        raise ConfigError(
            f"--strategy {name} tolerates {f} hostile hospital(s) only when at least {needed} "
            f"(2f + 3) answer each round; this federation has {hospitals}: add hospitals "
            f"(--hospitals {needed}), lower strategy.byzantine in --config, or pick "
            "--strategy median or trimmed_mean, which run with any number"
        )
    quorum = config.round.min_sites
    return raised_quorum(
        config,
        needed,
        too_low=f"--min-sites {quorum} is too low for --strategy {name}: with byzantine {f} it "
        f"aggregates at least {needed} updates (2f + 3); use --min-sites {needed} or more",
        note=f"strategy {name} (byzantine {f}) needs {needed} updates per round: quorum "
        f"round.min_sites raised from {quorum} to {needed} (--min-sites to set it)",
    )


def raised_quorum(
    config: FederationConfig, needed: int, *, too_low: str, note: str
) -> tuple[FederationConfig, list[str]]:
    """A quorum of at least ``needed``: one the user left at its default is raised (``note``
    says so); one the user set below it is refused with ``too_low`` (exit 2)."""
    if config.round.min_sites >= needed:
        return config, []
    if "min_sites" in config.round.model_fields_set:
        raise ConfigError(too_low)
    return with_quorum(config, needed), [note]


def with_quorum(config: FederationConfig, min_sites: int) -> FederationConfig:
    """The config validated again with ``round.min_sites`` raised, as if the user had set it.

    Built from the settings the user gave (``exclude_unset``), so every other field keeps
    telling apart a default from a choice.
    """
    settings = config.model_dump(exclude_unset=True)
    settings["round"] = {**settings.get("round", {}), "min_sites": min_sites}
    return FederationConfig.model_validate(settings)


def _trimmed_mean_notes(strategy: TrimmedMeanStrategy, hospitals: int | None) -> list[str]:
    """Trimmed mean drops floor(trim_fraction * n) updates per side: none in a small round."""
    if hospitals is None or strategy.trim_fraction == 0:
        return []
    if int(strategy.trim_fraction * hospitals) >= 1:
        return []
    needed = math.ceil(1 / strategy.trim_fraction)
    return [
        f"strategy trimmed_mean with trim_fraction {strategy.trim_fraction:g} trims nothing "
        f"below {needed} updates: with {hospitals} hospitals it is plain FedAvg (add hospitals, "
        "raise strategy.trim_fraction in --config, or use --strategy median)"
    ]


def planned_hospitals(config: FederationConfig) -> int | None:
    """How many hospitals ``simulate`` will run, where the config alone says it."""
    if config.data.source == "synthetic":
        return config.data.synthetic.hospitals
    if config.data.source == "twin":
        return config.data.twin.hospitals  # at most: min_stays may keep some out
    if config.data.source == "prepared" and config.data.path is not None:
        from fl_core.data.prepared import read_schema

        return len(read_schema(Path(config.data.path)).sites)
    return None

"""The secure aggregation threshold ``t``: how many hospitals must take part to unmask.

Written once for both sides: the aggregator picks and checks ``t`` for its roster, and every
hospital refuses a roster whose ``t`` would let a minority reconstruct its secrets.
"""

from __future__ import annotations

from fl_core.errors import ConfigError


def honest_majority(num_sites: int) -> int:
    """The smallest threshold for which two disjoint groups cannot both reconstruct."""
    return num_sites // 2 + 1


def default_threshold(num_sites: int) -> int:
    """``n - floor(n/3)``: up to a third of the sites may drop out, and ``t > n/2``."""
    return num_sites - num_sites // 3


def check_threshold(threshold: int, num_sites: int) -> int:
    """``threshold`` if it is an honest majority of ``num_sites`` and at most all of them."""
    if not honest_majority(num_sites) <= threshold <= num_sites:
        raise ConfigError(
            f"privacy.secagg.threshold {threshold} must be in "
            f"{honest_majority(num_sites)}..{num_sites} for {num_sites} hospitals (more than "
            "half, so no minority can unmask a site); leave it unset for n - floor(n/3)"
        )
    return threshold

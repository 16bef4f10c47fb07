"""Hospitals' training data and a fake clock for the feature-moments exchange before round 1.

Each hospital's features are drawn around its own seed with every fourth value of one column
not measured, so pooled and combined moments differ unless the NaNs are handled.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fl_core.config import FederationConfig, load_config
from fl_core.data.base import SiteData, Split

SITES = ["site-a", "site-b", "site-c"]


def site_data(site_id: str, rows: int, seed: int) -> SiteData:
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=seed, size=(rows, 3)).astype(np.float32)
    x[::4, 1] = np.nan  # not measured
    y = (rng.random(rows) < 0.2).astype(np.int8)
    empty = Split(x[:0], y[:0])
    names = ("a", "b", "c")
    return SiteData(
        site_id=site_id, feature_names=names, train=Split(x, y), valid=empty, test=empty
    )


def fake_clock() -> tuple[Callable[[], float], Callable[[float], None]]:
    now = [0.0]

    def clock() -> float:
        return now[0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    return clock, sleep


def config(**overrides: object) -> FederationConfig:
    base = {"round.deadline_s": 10.0, "round.min_sites": 2, "data.synthetic.hospitals": 3}
    base.update(overrides)
    return load_config(overrides=base)

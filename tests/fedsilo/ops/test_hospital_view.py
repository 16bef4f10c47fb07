"""The per-hospital view: federated vs alone on each hospital's own stays, by Brier score."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.ops.hospital_view import compare_hospitals


def test_shares_and_worst_decile_by_hand() -> None:
    labels = {f"h{i}": np.array([0, 0, 1 if i < 4 else 0], np.int8) for i in range(10)}
    # federated: 0.2 for everyone; alone: 0.0 for everyone (a model that saw no death)
    federated = {site: np.full(3, 0.2) for site in labels}
    alone = {site: np.zeros(3) for site in labels}
    view = compare_hospitals(federated, alone, labels)
    assert view is not None
    # with a death: federated (0.04 + 0.04 + 0.64) / 3 = 0.24 < alone 1/3; without: 0.04 > 0
    assert view.hospitals == 10
    assert view.share_better == pytest.approx(0.4)
    assert view.with_deaths == 4 and view.share_better_with_deaths == pytest.approx(1.0)
    # the worst decile (1 of 10) is a hospital without a death: 0.04 against 0
    assert view.worst_decile_federated_brier == pytest.approx(0.04)
    assert view.worst_decile_local_brier == pytest.approx(0.0)


def test_only_hospitals_with_both_predictions_and_stays_count() -> None:
    labels = {"a": np.array([1], np.int8), "b": np.array([], np.int8), "c": np.array([0], np.int8)}
    federated = {"a": np.array([0.9]), "b": np.array([]), "c": np.array([0.1])}
    alone = {"a": np.array([0.5]), "b": np.array([])}
    view = compare_hospitals(federated, alone, labels)
    assert view is not None and view.hospitals == 1 and view.share_better == 1.0
    assert compare_hospitals({}, {}, {}) is None

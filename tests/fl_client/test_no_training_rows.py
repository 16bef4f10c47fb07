"""A hospital with no training rows (a fold holding all its stays) declines, it is not refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedsilo.engine.app import build_source
from fedsilo.engine.inline import run_inline
from fl_core.config import load_config
from fl_core.data.base import SiteData, Split
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.protocol import Exchange


def test_a_hospital_without_training_rows_declines_and_still_evaluates(tmp_path: Path) -> None:
    config = load_config(overrides={"rounds": 2, "data.synthetic.hospitals": 3})
    source = build_source(config)
    sites = [source.load_site(s) for s in source.site_ids()]
    empty = sites[0]
    no_rows = Split(x=empty.train.x[:0], y=empty.train.y[:0])
    sites[0] = SiteData(empty.site_id, empty.feature_names, no_rows, empty.valid, empty.test)
    rows = run_inline(config, sites, tmp_path)
    exchange = Exchange(LocalDirectoryStore(tmp_path), config.federation_id)
    for round_index in (1, 2):
        result = exchange.read_result(round_index)
        assert result is not None
        assert not result.rejected
        assert [d.site_id for d in result.declined] == [empty.site_id]
        assert result.declined[0].reason == "no_training_rows"
        assert len(result.accepted) == 2
    # its test stays are still in the evaluation of every model
    assert rows[-1].eval_sites == 3
    assert rows[-1].auroc is not None and np.isfinite(rows[-1].auroc)

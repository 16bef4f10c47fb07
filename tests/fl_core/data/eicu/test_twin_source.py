"""``make run``'s data: the twin synthesised once into a cache and read by the real reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedsilo.engine.app import build_source
from fl_core.config import TwinDataConfig, load_config
from fl_core.data.eicu.twin_source import materialise_twin
from fl_core.errors import ConfigError


def test_twin_is_built_once_then_read_from_the_cache(tmp_path: Path) -> None:
    twin = TwinDataConfig(hospitals=5, stays=400, cache_dir=tmp_path / "cache")
    prepared = materialise_twin(twin, federation_seed=3)
    schema = prepared / "schema.json"
    assert schema.is_file()
    built = schema.stat().st_mtime_ns
    assert materialise_twin(twin, federation_seed=3) == prepared
    assert schema.stat().st_mtime_ns == built  # not rebuilt
    assert materialise_twin(twin, federation_seed=4) != prepared  # the seed is in the key
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".building-")]


def test_twin_source_holds_the_twin_hospitals_with_yardsticks(tmp_path: Path) -> None:
    config = load_config(
        overrides={
            "data.source": "twin",
            "data.twin.hospitals": 6,
            "data.twin.stays": 900,
            "data.twin.cache_dir": str(tmp_path),
        }
    )
    source = build_source(config)
    sites = source.site_ids()
    assert 1 <= len(sites) <= 6
    test_split = source.load_site(sites[0]).test
    assert {"apache", "bayes"} <= set(test_split.reference_scores)


def test_twin_config_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"data\.twin\.hospitals"):
        load_config(
            overrides={"data.source": "twin", "data.twin.hospitals": 3, "round.min_sites": 5}
        )
    with pytest.raises(ConfigError, match="stays"):
        load_config(overrides={"data.twin.hospitals": 30, "data.twin.stays": 25})


@pytest.mark.slow
def test_simulate_twin_from_the_command_line(tmp_path: Path) -> None:
    config = tmp_path / "twin.yaml"
    config.write_text(f"data:\n  twin:\n    stays: 1500\n    cache_dir: {tmp_path / 'cache'}\n")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "fedsilo.cli", "simulate", "--twin", "--hospitals", "6"),
            *("--rounds", "2", "--config", str(config), "--out", str(tmp_path), "--run-id", "t"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    assert "yardstick AUROC on the same stays: apache, bayes" in done.stdout
    rows = [json.loads(x) for x in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    assert rows[-1]["auroc"] > 0.6
    assert set(rows[-1]["reference_auroc"]) == {"apache", "bayes"}

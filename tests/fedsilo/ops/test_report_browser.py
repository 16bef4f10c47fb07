"""The report in headless Chromium: a finished run, the real eICU demo and the 208-hospital twin.

At the scale of eICU (186 hospitals in the demo, 208 in the twin) the per-hospital figures
are built from each hospital's real test split scored by APACHE IVa's predicted mortality, as
the final round's histograms would be; every chart must draw, raise no console error, and stay
within one and a half screens of height.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from matplotlib.image import imread

from fedsilo.engine.metrics_row import MetricsRow
from fedsilo.ops.report import RunData, write_page, write_report
from fl_core.config import FederationConfig
from fl_core.data.eicu.prepare import prepare_eicu
from fl_core.data.eicu.synth import synthesise
from fl_core.data.prepared import PreparedFolderSource
from fl_core.metrics import ClassHistogram, auroc_from_histogram

CHROMIUM = Path("/usr/bin/chromium")
DEMO_DIR = (Path(__file__).resolve().parents[3] / "../shared/data/eicu-demo").resolve()
SCREEN = (1280, 900)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--virtual-time-budget=15000",  # the load handler runs before the DOM is read
    "--enable-logging=stderr",
    "--v=0",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="Debian chromium is not installed (make install adds it); required when CI is set",
)


def apache_run(prepared: Path, name: str) -> RunData:
    """The report's data for a prepared cohort: each hospital's test split under APACHE IVa."""
    source = PreparedFolderSource(prepared)
    bins = 2000
    histograms = {}
    for site_id in source.site_ids():
        test = source.load_site(site_id).test
        histograms[site_id] = ClassHistogram.from_scores(
            test.reference_scores["apache"], test.y, bins
        )
    data = RunData(
        run_name=name,
        config=FederationConfig.model_validate({"data": {"source": "prepared", "path": prepared}}),
        rows=[],
        results=[],
        evaluation_round=1,
        site_histograms=histograms,
    )
    pooled = auroc_from_histogram(data.pooled)
    return RunData(
        run_name=name,
        config=data.config,
        rows=[
            MetricsRow(
                round=1,
                auroc=pooled,
                auprc=None,
                loss=None,
                train_loss=None,
                sites_accepted=len(histograms),
                sites_rejected=0,
                sites_missing=0,
                seconds=0.0,
            )
        ],
        results=[],
        evaluation_round=1,
        site_histograms=histograms,
    )


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def check_in_chromium(page: Path, figures: int, tmp_path: Path) -> None:
    assert CHROMIUM.exists(), "CI is set: chromium must be installed (make install)"
    url = page.resolve().as_uri()
    size = f"--window-size={SCREEN[0]},{SCREEN[1]}"
    dom = _chromium("--dump-dom", size, url, profile=tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert f'data-figures-drawn="{figures}"' in dom.stdout
    tallest = int(dom.stdout.split('data-tallest-figure-px="', 1)[1].split('"', 1)[0])
    assert 0 < tallest <= 1.5 * SCREEN[1]
    screenshot = tmp_path / f"{page.stem}.png"
    shot = _chromium(
        f"--screenshot={screenshot}",
        f"--window-size={SCREEN[0]},{4 * SCREEN[1]}",
        url,
        profile=tmp_path / "profile",
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    for log in (dom.stderr, shot.stderr):
        errors = [
            line
            for line in log.splitlines()
            if "CONSOLE" in line or "Uncaught" in line or "Refused to" in line
        ]
        assert not errors, errors
    pixels = imread(str(screenshot))
    assert pixels.shape[:2] == (4 * SCREEN[1], SCREEN[0])
    assert float(pixels[..., :3].std()) > 0.05  # not a blank page
    keep = os.environ.get("FEDSILO_KEEP_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(keep) / screenshot.name)


def test_finished_run_report_renders(finished_run: Path, tmp_path: Path) -> None:
    outcome = write_report(finished_run, tmp_path / "finished-run.html")
    check_in_chromium(tmp_path / "finished-run.html", len(outcome.figures), tmp_path)


def test_eicu_demo_report_renders(tmp_path: Path) -> None:
    if not DEMO_DIR.is_dir():
        pytest.skip(f"eICU demo not present at {DEMO_DIR}")
    prepared = tmp_path / "prepared"
    prepare_eicu(DEMO_DIR, prepared, min_stays=1, seed=0)
    data = apache_run(prepared, "eicu-demo")
    assert len(data.sites) == 186
    outcome = write_page(data, tmp_path / "eicu-demo.html")
    assert outcome.figures == ["metrics", "hospitals", "calibration"]
    check_in_chromium(tmp_path / "eicu-demo.html", 3, tmp_path)


def test_twin_report_renders(tmp_path: Path) -> None:
    synthesise(tmp_path / "twin", hospitals=208, stays=20_000, seed=0)
    prepared = tmp_path / "prepared"
    prepare_eicu(tmp_path / "twin", prepared, min_stays=1, seed=0)
    data = apache_run(prepared, "eicu-twin")
    assert len(data.sites) == 208
    assert any(s.evaluable for s in data.sites)
    outcome = write_page(data, tmp_path / "eicu-twin.html")
    check_in_chromium(tmp_path / "eicu-twin.html", len(outcome.figures), tmp_path)

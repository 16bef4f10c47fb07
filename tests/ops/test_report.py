"""``fedsilo report``: every figure has data, and the page renders in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from fedsilo.ops.report import NOT_AVAILABLE, calibration_points, write_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
]


@pytest.fixture(scope="module")
def report(finished_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("report")
    write_report(finished_run, out / "report.html", out / "png")
    return out / "report.html", out / "png"


def test_every_figure_has_data_and_missing_things_say_so(report: tuple[Path, Path]) -> None:
    page = report[0].read_text()
    points = dict(re.findall(r'<figure id="fig-(\w+)" data-points="(\d+)"', page))
    assert set(points) == {"metrics", "hospitals", "calibration", "rejections"}
    assert all(int(n) > 0 for n in points.values()), points
    assert page.count('src="data:image/png;base64,') == 4
    assert "http://" not in page and "https://" not in page  # self-contained
    assert f"Local-only and fine-tuned models per hospital: {NOT_AVAILABLE}" in page
    assert f"Epsilon per hospital: {NOT_AVAILABLE}" in page
    assert sorted(p.name for p in report[1].iterdir()) == [
        "calibration.png",
        "hospitals.png",
        "metrics.png",
        "rejections.png",
    ]


def test_calibration_groups_keep_every_stay() -> None:
    positives = np.zeros(200, np.int64)
    negatives = np.zeros(200, np.int64)
    positives[150:160] = 3
    negatives[20:120] = 5
    predicted, observed, sizes = calibration_points(positives, negatives, 10)
    assert sizes.sum() == positives.sum() + negatives.sum()
    assert np.all(np.diff(predicted) > 0)
    assert (observed * sizes).sum() == pytest.approx(positives.sum())
    assert observed[0] == 0.0 and observed[-1] > 0.5


def _chromium(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="Debian chromium is not installed (make install adds it); required when CI is set",
)
def test_report_renders_in_headless_chromium(report: tuple[Path, Path], tmp_path: Path) -> None:
    assert CHROMIUM.exists(), "CI is set: chromium must be installed (make install)"
    url = report[0].resolve().as_uri()
    dom = _chromium("--dump-dom", url, tmp_path=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-figures-loaded="4"' in dom.stdout  # the page's load handler saw 4 decoded images
    screenshot = tmp_path / "report.png"
    shot = _chromium(
        f"--screenshot={screenshot}", "--window-size=1200,3000", url, tmp_path=tmp_path
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
    assert pixels.shape[:2] == (3000, 1200)
    assert float(pixels[..., :3].std()) > 0.05  # not a blank page
    keep = os.environ.get("FEDSILO_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(screenshot, keep)

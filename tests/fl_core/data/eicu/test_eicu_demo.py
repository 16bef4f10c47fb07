"""The real eICU-CRD Demo, read unchanged (skipped only where the folder is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from fl_core.data.eicu.cohort import load_cohort
from fl_core.data.eicu.prepare import prepare_eicu
from fl_core.data.prepared import PreparedFolderSource


def test_demo_read_unchanged_cohort_and_apache_auroc(demo_dir: Path) -> None:
    cohort = load_cohort(demo_dir)
    report = cohort.report
    assert report.stays_read == 2520 and report.hospitals_read == 186
    # first unit stay of each admission, adults, known outcome
    assert report.cohort_stays == 2086 and cohort.stays["hospitalid"].nunique() == 186
    assert report.excluded["later_unit_stay"] == 401
    assert report.cohort_deaths == 175
    assert (cohort.stays["age"] >= 18).all() and (cohort.stays["age"] <= 90).all()
    apache = cohort.stays["ref_apache"].to_numpy()
    known = ~np.isnan(apache)
    assert known.sum() == 1624
    auroc = roc_auc_score(cohort.stays["label"].to_numpy()[known], apache[known])
    assert abs(auroc - 0.865) < 0.01, auroc


def test_demo_prepared_every_hospital_loads(demo_dir: Path, tmp_path: Path) -> None:
    result = prepare_eicu(demo_dir, tmp_path / "prep", min_stays=1, seed=0)
    source = PreparedFolderSource(tmp_path / "prep")
    assert len(source.site_ids()) == 186 and "site-73" in source.site_ids()
    assert (tmp_path / "prep" / "site_73" / "train.parquet").is_file()
    total = 0
    labels: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    for site_id in source.site_ids():
        site = source.load_site(site_id)
        for split in (site.train, site.valid, site.test):
            total += split.num_examples
            labels.append(split.y)
            scores.append(split.reference_scores["apache"])
            assert "bayes" not in split.reference_scores
    assert total == result.cohort.report.cohort_stays
    y, s = np.concatenate(labels), np.concatenate(scores)
    assert abs(roc_auc_score(y[~np.isnan(s)], s[~np.isnan(s)]) - 0.865) < 0.01
    small = [e for e in result.schema.sites if e.note and e.note.startswith("too small")]
    assert all(e.rows["valid"] == e.rows["test"] == 0 for e in small)

"""Personalisation: each hospital fine-tunes the final model; reports show both AUROCs."""

from __future__ import annotations

import json

from fedsilo.engine.federation import rows_from_exchange
from fedsilo.engine.metrics_row import write_metrics
from fedsilo.ops.personalisation_report import (
    PersonalisationSummary,
    SitePersonalisation,
    personalisation_summary,
    summary_html,
    summary_lines,
)
from fedsilo.ops.report import write_report
from fl_client.hospital import answer_round
from fl_core.control_variates import has_controls


def test_final_round_reports_finetuned_auroc_per_hospital_and_the_report_renders(kit, tmp_path):
    config = kit.config(
        rounds=2,
        **{
            "personalization.finetune_epochs": 3,
            "training.learning_rate": 0.01,
            "data.synthetic.mean_stays": 300,
        },
    )
    run = kit.run(tmp_path, config)
    final = config.rounds + 1
    sites = [d.site_id for d in run.results[-1].accepted]
    summary = personalisation_summary(run.exchange, final, sites)
    assert summary is not None and [s.site_id for s in summary.sites] == sorted(sites)
    for site in summary.sites:
        manifest = json.loads(run.exchange.read_update_manifest_bytes(final, site.site_id))
        assert manifest["evaluation"]["finetuned"]["num_examples"] == site.num_examples
    assert summary.pooled_global_auroc is not None and summary.pooled_finetuned_auroc is not None
    # the pooled global figure is the one the round loop computed from the same histograms
    assert summary.pooled_global_auroc == run.final_auroc
    assert summary.pooled_finetuned_auroc != summary.pooled_global_auroc
    lines = summary_lines(summary)
    print("\n".join(lines))
    assert len(lines) == 1 + len(sites)
    # training rounds carry no fine-tuned report: only the final evaluation round does
    earlier = json.loads(run.exchange.read_update_manifest_bytes(final - 1, "site-001"))
    assert earlier["evaluation"]["finetuned"] is None

    run_dir = tmp_path  # kit.run put the exchange in tmp_path / "exchange", as simulate does
    (run_dir / "config.json").write_text(config.model_dump_json())
    rows = rows_from_exchange(run.exchange, config.rounds)
    write_metrics(run_dir / "metrics.jsonl", rows)
    write_report(run_dir, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert 'id="personalisation"' in page and "fine-tuned AUROC" in page
    for site in summary.sites:
        assert f">{site.site_id}</td>" in page


def test_no_finetuning_leaves_the_answer_unchanged(kit, tmp_path):
    config = kit.config(rounds=1)
    run = kit.run(tmp_path, config)
    manifest = json.loads(run.exchange.read_update_manifest_bytes(2, "site-002"))
    assert manifest["evaluation"]["finetuned"] is None
    assert personalisation_summary(run.exchange, 2, ["site-002"]) is None
    assert "not available in this run" in summary_html(None)


def test_finetuned_weights_never_leave_the_hospital(kit, tmp_path):
    """After answering the final round the trainer holds the global model again."""
    config = kit.config(rounds=1, **{"personalisation.finetune_epochs": 2})
    run = kit.run(tmp_path, config)
    hospital = kit.hospitals(config)[0]
    final = run.exchange.read_global_manifest(2)
    assert final is not None and final.final
    answer_round(run.exchange, hospital, final, config)  # already answered: nothing is written
    weights = hospital.trainer.get_weights()
    stored = run.global_weights(2)
    assert not has_controls(stored)
    for name, value in stored.items():
        assert (weights[name] == value).all(), name


def test_a_one_class_hospital_shows_na_not_a_crash():
    summary = PersonalisationSummary(
        round_index=4,
        sites=[
            SitePersonalisation("site-a", 40, 0.71, 0.75),
            SitePersonalisation("site-b", 6, None, None),
        ],
        pooled_global_auroc=0.7,
        pooled_finetuned_auroc=0.74,
    )
    page = summary_html(summary)
    assert "<td>n/a</td><td>n/a</td>" in page
    lines = summary_lines(summary)
    assert "fine-tuning helped 1 of 1 hospitals" in lines[0]
    assert "n/a" in lines[2]


def test_a_local_intercept_shifts_the_final_model_at_each_hospital_and_stays_there(kit, tmp_path):
    config = kit.config(rounds=1, **{"personalisation.local_intercept": True})
    run = kit.run(tmp_path, config)
    sites = [d.site_id for d in run.results[-1].accepted]
    summary = personalisation_summary(run.exchange, 2, sites)
    assert summary is not None and summary.pooled_finetuned_auroc is not None
    hospital = kit.hospitals(config)[0]
    final = run.exchange.read_global_manifest(2)
    assert final is not None
    answer_round(run.exchange, hospital, final, config)
    stored = run.global_weights(2)
    weights = hospital.trainer.get_weights()
    assert all((weights[name] == value).all() for name, value in stored.items())


def test_the_intercept_refit_moves_the_model_by_the_shift_its_rows_call_for(kit):
    import numpy as np

    from fl_client.personalise import refit_intercept
    from fl_core.recalibration import RISK_INTERCEPT

    config = kit.config(rounds=1)
    hospital = kit.hospitals(config)[0]
    trainer, data = hospital.trainer, hospital.data
    before = float(trainer.get_weights()[RISK_INTERCEPT][0])
    risk = trainer.predict_proba(data.train.x)
    refit_intercept(trainer, data, prior_sd=2.0)
    moved = float(trainer.get_weights()[RISK_INTERCEPT][0]) - before
    after = trainer.predict_proba(data.train.x)
    # the refit model's mean risk on the rows is pulled toward their observed mortality
    observed = float(data.train.y.mean())
    assert moved != 0.0
    assert abs(after.mean() - observed) < abs(risk.mean() - observed)
    refit_intercept(trainer, data, prior_sd=1e-6)  # a prior that allows no shift
    assert float(trainer.get_weights()[RISK_INTERCEPT][0]) == np.float32(before + moved)

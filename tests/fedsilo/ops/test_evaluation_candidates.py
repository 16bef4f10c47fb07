"""``fedsilo data evaluate --candidate``: several presets on the same folds, one row each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedsilo.cli.data import run_data_command
from fedsilo.ops.evaluation_candidates import (
    CANDIDATES,
    candidate_config,
    candidates_named,
    choose_by_validation,
)
from fedsilo.ops.evaluation_summary import PAGE_FILE, SUMMARY_FILE, EvaluationSummary
from fl_core.config import load_config
from fl_core.errors import ConfigError


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("candidates")
    args = ["synth", "--hospitals", "4", "--stays", "800", "--out", str(root / "twin")]
    assert run_data_command(args) == 0
    (root / "federation.yaml").write_text("rounds: 1\nsimulation:\n  workers: 1\n")
    return root


def _prepare(root: Path, features: str) -> Path:
    out = root / f"prepared_{features}"
    if not out.is_dir():
        args = ["prepare", "--eicu-dir", str(root / "twin"), "--out", str(out)]
        assert run_data_command([*args, "--features", features]) == 0
    return out


def _evaluate(root: Path, data: Path, out: Path, *candidates: str) -> int:
    args = ["evaluate", "--data", str(data), "--out", str(out), "--folds", "2", "--no-local-only"]
    named = [part for name in candidates for part in ("--candidate", name)]
    return run_data_command([*args, "--config", str(root / "federation.yaml"), *named, "--json"])


@pytest.mark.slow
def test_every_candidate_is_a_row_and_the_rule_reads_validation_only(
    twin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _prepare(twin, "full")
    capsys.readouterr()
    assert _evaluate(twin, data, tmp_path / "cv", "core", "rich_apache_logistic") == 0
    summary = EvaluationSummary.model_validate(json.loads(capsys.readouterr().out))
    assert summary == EvaluationSummary.model_validate_json(
        (tmp_path / "cv" / SUMMARY_FILE).read_text()
    )
    rows = {m.candidate: m for m in summary.models if m.candidate is not None}
    assert set(rows) == {"core", "rich_apache_logistic"}
    for row in rows.values():
        assert row.model == f"federated: {row.candidate}"
        assert row.folds_scored == 2 and row.auroc_mean is not None and row.auroc_sd is not None
        assert row.out_of_fold_auroc is not None and row.slope is not None
        assert row.intercept is not None and row.validation_log_loss is not None
    assert "apache" in [m.model for m in summary.models]  # the yardstick stays beside them
    described = {c.name: c for c in summary.candidates}
    assert described["rich_apache_logistic"].hidden_sizes == ()
    assert described["core"].hidden_sizes == (32,)
    assert described["core"].feature_groups == ("core",)
    losses = {name: row.validation_log_loss for name, row in rows.items()}
    assert summary.chosen_by_validation == min(losses, key=lambda n: losses[n] or 0.0)
    page = (tmp_path / "cv" / PAGE_FILE).read_text()
    assert "federated: rich_apache_logistic" in page and "Candidates" in page
    # the second candidate's work lives apart from the first's
    assert (tmp_path / "cv" / "candidates" / "rich_apache_logistic").is_dir()


@pytest.mark.slow
def test_a_candidate_needing_columns_the_folder_lacks_is_refused_the_default_takes_all(
    twin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _prepare(twin, "core")
    assert _evaluate(twin, data, tmp_path / "cv", "apache_input") != 0
    assert "--features full" in capsys.readouterr().err
    # without --candidate every column of the folder is used, whatever it holds
    assert _evaluate(twin, data, tmp_path / "cv") == 0
    summary = EvaluationSummary.model_validate(json.loads(capsys.readouterr().out))
    assert [c.name for c in summary.candidates] == ["as_prepared"]
    assert summary.models[0].model == "federated" and summary.chosen_by_validation is None


def test_unknown_or_repeated_candidates_are_refused() -> None:
    with pytest.raises(ConfigError, match="choose from core, logistic"):
        candidates_named(["deep"])
    with pytest.raises(ConfigError, match="named twice"):
        candidates_named(["logistic", "logistic"])
    assert [c.name for c in candidates_named([])] == ["as_prepared"]
    assert candidates_named([])[0].feature_groups is None  # every column, eICU or a table


def test_logistic_candidate_has_no_hidden_layer_and_the_others_keep_the_config() -> None:
    config = load_config(overrides={"training.hidden_sizes": [16, 8]})
    assert candidate_config(config, CANDIDATES["logistic"]).training.hidden_sizes == ()
    assert candidate_config(config, CANDIDATES["core"]) is config


def test_the_rule_picks_the_lowest_validation_loss_and_ignores_unknown() -> None:
    assert choose_by_validation({"a": 0.25, "b": 0.21, "c": None}) == "b"
    assert choose_by_validation({"a": None}) is None


DEMO_DIR = (Path(__file__).resolve().parents[3] / "../shared/data/eicu-demo").resolve()


DEMO_CANDIDATES = ("rich", "apache_customised_logistic", "rich_apache_skip")
"""Every feature group the real tables give (admission, APACHE's prediction) and every model
option (the network, logistic regression, a start from APACHE's logit, the linear term) at
least once; the others combine these, and the twin's test runs their table mechanics."""


def test_the_demo_candidates_cover_every_group_and_option() -> None:
    chosen = [CANDIDATES[name] for name in DEMO_CANDIDATES]
    groups = {group for c in chosen for group in c.feature_groups or ()}
    assert groups == {g for c in CANDIDATES.values() for g in c.feature_groups or ()}
    assert {c.hidden_sizes == () for c in chosen} == {True, False}
    assert any(c.logit_offset for c in chosen) and any(c.linear_skip for c in chosen)


@pytest.mark.slow
def test_demo_table_has_the_candidates_beside_apache(tmp_path: Path) -> None:
    """The real eICU-CRD Demo, one round on two folds (the figures in docs/model-quality.md
    come from the full command there, every candidate on five folds)."""
    if not DEMO_DIR.is_dir():
        pytest.skip(f"eICU demo not present at {DEMO_DIR}")
    import io

    from rich.console import Console

    from fedsilo.cli.data import cross_validation_table

    data = tmp_path / "prepared"
    args = ["prepare", "--eicu-dir", str(DEMO_DIR), "--out", str(data), "--features", "full"]
    assert run_data_command(args) == 0
    (tmp_path / "federation.yaml").write_text("rounds: 1\nsimulation:\n  workers: 2\n")
    assert _evaluate(tmp_path, data, tmp_path / "cv", *DEMO_CANDIDATES) == 0
    summary = EvaluationSummary.model_validate_json((tmp_path / "cv" / SUMMARY_FILE).read_text())
    assert [m.candidate for m in summary.models if m.candidate] == list(DEMO_CANDIDATES)
    assert summary.chosen_by_validation in DEMO_CANDIDATES
    assert summary.test_deaths > 150  # every death of the demo tested once
    shown = io.StringIO()
    Console(file=shown, width=200).print(cross_validation_table(summary))
    for name in DEMO_CANDIDATES:
        assert f"federated: {name} " in shown.getvalue()
    assert "apache" in shown.getvalue()


def test_a_wide_candidate_adds_the_linear_term_and_keeps_the_config_layers() -> None:
    config = load_config(overrides={"training.hidden_sizes": [16]})
    wide = candidate_config(config, CANDIDATES["apache_skip"])
    assert wide.training.linear_skip is True
    assert wide.training.hidden_sizes == config.training.hidden_sizes
    assert candidate_config(config, CANDIDATES["apache_input"]).training.linear_skip is False


def test_the_network_in_words_names_the_linear_term_and_the_prior() -> None:
    from fedsilo.ops.evaluation_summary import CandidateSummary, network_text

    def summary(**fields: object) -> CandidateSummary:
        base: dict[str, object] = {"name": "c", "description": "d", "feature_groups": None}
        return CandidateSummary.model_validate({**base, "validation_log_loss": None, **fields})

    assert network_text(summary(hidden_sizes=[32])) == "32"
    assert network_text(summary(hidden_sizes=[32], linear_skip=True)) == "32 + linear term"
    started = summary(hidden_sizes=[], linear_skip=True, logit_offset="apache_iva_logit")
    assert network_text(started) == "none (logistic) started from apache_iva_logit"


def test_the_option_help_names_every_candidate() -> None:
    from typer.main import get_command

    from fedsilo.cli.data import data_app

    command = get_command(data_app).commands["evaluate"]  # type: ignore[attr-defined]
    shown = next(p.help for p in command.params if p.name == "candidate")
    assert shown is not None
    listed = shown.split("): ", 1)[1].split(";", 1)[0].split(", ")
    assert listed == list(CANDIDATES)

"""Reading commands never pass on nothing, and say what they read as JSON when asked.

``status``, ``ledger verify`` and ``report`` exit non-zero with one line when the federation,
exchange or run holds nothing; ``--json`` prints one document (docs/cli-json.md).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from fedsilo.engine.run_folder import read_outcome, record_outcome, resolve_run_folder
from fedsilo.ops.status import collect_status
from fedsilo.testing.cli import run_fedsilo
from fl_core.errors import ConfigError
from fl_core.exchange.layout import ExchangeLayout
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.uri import open_store

FEDERATION = "demo"


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("command", ["status", "ledger verify"])
def test_a_wrong_federation_id_is_never_a_pass(exchange_dir: Path, tmp_path: Path, command):
    done = run_fedsilo(
        *command.split(), "--federation", "demo-typo", "--exchange", str(exchange_dir),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode != 0
    lines = _error_lines(done.stderr)
    assert len(lines) == 1 and "demo-typo" in lines[0], done.stderr
    assert "--federation" in lines[0] and "Traceback" not in done.stderr
    assert "verified" not in done.stdout


@pytest.mark.parametrize("command", ["status", "ledger verify"])
def test_an_exchange_folder_that_does_not_exist_is_refused_and_not_made(
    tmp_path: Path, command
) -> None:
    missing = tmp_path / "no-such-exchange"
    done = run_fedsilo(
        *command.split(), "--federation", FEDERATION, "--exchange", str(missing), cwd=tmp_path
    )
    assert done.returncode == 2
    lines = _error_lines(done.stderr)
    assert len(lines) == 1 and "no such folder" in lines[0], done.stderr
    assert not missing.exists()


def test_status_json_is_the_documented_snapshot(exchange_dir: Path, tmp_path: Path) -> None:
    done = run_fedsilo(
        "status", "--federation", FEDERATION, "--exchange", str(exchange_dir), "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["schema_id"] == "fedsilo.status/1"
    assert document["federation_id"] == FEDERATION
    assert document["phase"] == "done" and document["final"] and document["ended"]
    assert document["training_round"] == 2 and document["round_index"] == 3
    assert [site["site_id"] for site in document["sites"]] == [f"site-00{i}" for i in range(1, 5)]
    assert {site["state"] for site in document["sites"]} == {"finished"}
    table = collect_status(Exchange(open_store(exchange_dir.as_uri()), FEDERATION))
    assert [site["last_auroc"] for site in document["sites"]] == [
        site.last_auroc for site in table.sites
    ]
    assert any(site["last_auroc"] is not None for site in document["sites"])


def test_ledger_verify_json_says_ok_and_then_names_the_altered_round(
    exchange_dir: Path, tmp_path: Path
) -> None:
    verify = ("ledger", "verify", "--federation", FEDERATION, "--exchange", str(exchange_dir))
    done = run_fedsilo(*verify, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["schema_id"] == "fedsilo.ledger-verify/1"
    assert document["ok"] and document["problems"] == [] and document["first_bad_round"] is None
    assert document["rounds_checked"] == 3 and len(document["head_hash"]) == 64
    published = exchange_dir / ExchangeLayout(FEDERATION).published_weights_key()
    assert document["published_sha256"] == hashlib.sha256(published.read_bytes()).hexdigest()
    assert sum(document["digest_sources"].values()) > 0
    model = exchange_dir / ExchangeLayout(FEDERATION).global_weights_key(2)
    data = bytearray(model.read_bytes())
    data[-1] ^= 0x01
    model.chmod(0o600)  # history files are read-only; whoever owns the folder can undo it
    model.write_bytes(bytes(data))
    altered = run_fedsilo(*verify, "--json", cwd=tmp_path)
    assert altered.returncode == 8
    document = json.loads(altered.stdout)
    assert not document["ok"] and document["first_bad_round"] == 2
    assert document["problems"][0]["round_index"] == 2
    assert len(_error_lines(altered.stderr)) == 1


def test_report_refuses_a_run_without_closed_rounds(finished_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "empty-run"
    run.mkdir()
    shutil.copy(finished_run / "config.json", run / "config.json")
    (run / "metrics.jsonl").write_text("")
    done = run_fedsilo("report", str(run), "-o", str(tmp_path / "r.html"), cwd=tmp_path)
    assert done.returncode == 2
    lines = _error_lines(done.stderr)
    assert len(lines) == 1 and "no closed round" in lines[0], done.stderr
    assert not (tmp_path / "r.html").exists()


def test_a_failed_run_is_never_the_newest(finished_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    shutil.copytree(finished_run, out / "r1")
    failed = out / "r2"
    failed.mkdir()
    shutil.copy(finished_run / "config.json", failed / "config.json")  # newer than r1's
    record_outcome(failed, "failed", "hospital worker 0 failed: no data")
    assert read_outcome(failed) is not None and read_outcome(out / "r1") is None
    chosen, note = resolve_run_folder(out)
    assert chosen == out / "r1" and note is not None and "newest run of 2" in note
    named, note = resolve_run_folder(failed)  # named directly: shown, with why it stopped
    assert named == failed and note == "note: this run failed: hospital worker 0 failed: no data"
    shutil.rmtree(out / "r1")
    with pytest.raises(ConfigError, match="failed or interrupted and none finished"):
        resolve_run_folder(out)


def test_an_interrupted_run_is_shown_by_status_but_not_reported_as_finished(
    finished_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    shutil.copytree(finished_run, out / "r1")
    shutil.copytree(finished_run, out / "r2")
    (out / "r2" / "config.json").touch()
    record_outcome(out / "r2", "interrupted", "stopped after round 1")
    assert resolve_run_folder(out)[0] == out / "r2"
    assert resolve_run_folder(out, needs="metrics.jsonl")[0] == out / "r1"

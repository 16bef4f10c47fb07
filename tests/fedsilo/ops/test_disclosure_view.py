"""How status and the report show what the disclosure floors kept out of a round."""

from __future__ import annotations

from fedsilo.ops.disclosure_view import latest_withheld, withheld_html, withheld_text
from fl_core.exchange.manifests import RoundMetrics, RoundResult


def result(round_index: int, withheld: dict[str, int], masked: int = 0) -> RoundResult:
    metrics = RoundMetrics(
        num_examples=40, num_sites=3, auroc=0.7, auprc=0.3, loss=0.4, masked_sites=masked
    )
    return RoundResult.model_validate(
        {
            "federation_id": "f",
            "round_index": round_index,
            "task": "train",
            "global_sha256": "1" * 64,
            "next_global_sha256": None,
            "accepted": [],
            "rejected": [],
            "missing": [],
            "evaluation": metrics.model_dump(),
            "train_loss": None,
            "started_unix": 0.0,
            "closed_unix": 1.0,
            "config_hash": "h",
            "withheld_evaluations": withheld,
        }
    )


def table(headers: list[str], rows: list[list[str]], _: set[int]) -> str:
    return "|".join(headers) + "\n" + "\n".join("|".join(row) for row in rows)


def test_a_round_the_floors_touched_is_one_line() -> None:
    assert withheld_text(result(3, {"min_stays": 2, "min_events": 1}, masked=1)) == (
        "round 3: evaluations withheld by disclosure floors: min_events 1, min_stays 2; "
        "counted only in the masked sum: 1"
    )
    assert withheld_text(result(3, {})) is None


def test_status_shows_the_newest_round_a_floor_touched() -> None:
    newest_first = [result(4, {}), result(3, {"min_stays": 1}), result(2, {}, masked=2)]
    assert latest_withheld(newest_first) == (
        "round 3: evaluations withheld by disclosure floors: min_stays 1"
    )
    assert latest_withheld([result(1, {})]) is None


def test_the_report_section_lists_only_the_rounds_a_floor_touched() -> None:
    page = withheld_html([result(1, {}), result(2, {"min_events": 1}, masked=1)], table)
    assert "<h2>Disclosure floors</h2>" in page
    assert page.endswith("2|0|1|1|3")
    assert withheld_html([result(1, {})], table) == ""

"""The disclosure floor on a hospital's answer and moments report, each rule at k - 1 and k."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.testing.manifests import update_manifest
from fl_client.disclosure import (
    ANSWER_FIELDS,
    disclose_answer,
    disclose_moments,
    finish_answer,
    refuse_below_floor,
)
from fl_client.moments import moments_report
from fl_core.data.base import SiteData, Split
from fl_core.disclosure import DisclosureFloor, Suppression
from fl_core.exchange.histograms import histogram_document
from fl_core.exchange.manifests import EvaluationReport, MomentsReport, UpdateManifest
from fl_core.metrics import ClassHistogram
from fl_core.types import Weights
from fl_server.moments import check_moments

K_STAYS, K_EVENTS = 10, 3
FLOOR = DisclosureFloor(min_stays=K_STAYS, min_events=K_EVENTS)
BINS = 10


def split(stays: int, events: int, features: int = 2) -> Split:
    y = np.zeros(stays, np.int8)
    y[:events] = 1
    return Split(np.ones((stays, features), np.float32), y)


def site(train_stays: int = 50, train_events: int = 10) -> SiteData:
    return SiteData(
        "site-a", ("age", "hr"), split(train_stays, train_events), split(4, 1), split(4, 1)
    )


def report(
    stays: int, events: int, references: dict[str, tuple[int, int]] | None = None
) -> EvaluationReport:
    def hist(n: int, e: int) -> ClassHistogram:
        scores = np.linspace(0.01, 0.99, n)
        labels = np.arange(n) < e
        return ClassHistogram.from_scores(scores, labels, BINS)

    return EvaluationReport(
        num_examples=stays,
        loss_sum=0.5 * stays,
        histogram=histogram_document(hist(stays, events)),
        reference={
            name: histogram_document(hist(n, e)) for name, (n, e) in (references or {}).items()
        },
    )


def answer(evaluation: EvaluationReport | None, **changes: object) -> UpdateManifest:
    return update_manifest(evaluation=evaluation, **changes)


@pytest.mark.parametrize(
    ("stays", "events", "withheld"),
    [
        (K_STAYS - 1, K_EVENTS, "min_stays"),
        (K_STAYS, K_EVENTS - 1, "min_events"),
        (K_STAYS, K_EVENTS, None),
    ],
)
def test_evaluation_at_the_floor(stays: int, events: int, withheld: str | None) -> None:
    disclosed = disclose_answer(answer(report(stays, events)), site(), FLOOR, masked=False)
    if withheld is None:
        assert disclosed.update.evaluation == report(stays, events)
        assert disclosed.update.suppressed == []
    else:
        floor_value = K_STAYS if withheld == "min_stays" else K_EVENTS
        assert disclosed.update.evaluation is None
        assert disclosed.update.suppressed == [
            Suppression(path="evaluation", rule=withheld, floor=floor_value)
        ]
    assert disclosed.masked_evaluation is None


def test_under_secure_aggregation_a_small_evaluation_goes_into_the_masked_sum() -> None:
    small = report(K_STAYS - 1, K_EVENTS)
    disclosed = disclose_answer(answer(small), site(), FLOOR, masked=True)
    assert disclosed.update.evaluation is None
    assert disclosed.masked_evaluation == small
    assert disclosed.update.suppressed == [
        Suppression(path="evaluation", rule="min_stays", floor=K_STAYS, disclosed_as="masked_sum")
    ]


@pytest.mark.parametrize("floor", [FLOOR, None])
def test_under_secure_aggregation_every_evaluation_goes_into_the_masked_sum(
    floor: DisclosureFloor | None,
) -> None:
    """Were the larger ones in the clear, the sum minus them would be the small one."""
    large = report(K_STAYS, K_EVENTS)
    disclosed = disclose_answer(answer(large), site(), floor, masked=True)
    assert disclosed.masked_evaluation == large
    assert disclosed.update.evaluation is None
    assert disclosed.update.suppressed == []  # nothing withheld: it counts in the metrics
    assert (disclosed.update.num_examples, disclosed.update.train_loss) == (40, 0.3)


def test_each_reference_is_decided_on_the_stays_it_counts() -> None:
    full = report(20, 5, {"apache": (K_STAYS - 1, 5), "bayes": (K_STAYS, K_EVENTS)})
    disclosed = disclose_answer(answer(full), site(), FLOOR, masked=False).update
    assert disclosed.evaluation is not None
    assert set(disclosed.evaluation.reference) == {"bayes"}
    assert disclosed.evaluation.histogram == full.histogram
    assert disclosed.suppressed == [
        Suppression(path="evaluation.reference.apache", rule="min_stays", floor=K_STAYS)
    ]


def test_fine_tuned_references_are_decided_too() -> None:
    base = report(20, 5)
    tuned = report(20, 5, {"apache": (20, K_EVENTS - 1)})
    full = EvaluationReport(
        num_examples=20, loss_sum=1.0, histogram=base.histogram, finetuned=tuned
    )
    disclosed = disclose_answer(answer(full), site(), FLOOR, masked=False).update
    assert disclosed.evaluation is not None and disclosed.evaluation.finetuned is not None
    assert disclosed.evaluation.finetuned.reference == {}
    assert disclosed.suppressed == [
        Suppression(path="evaluation.finetuned.reference.apache", rule="min_events", floor=K_EVENTS)
    ]


def test_metrics_leave_only_with_an_evaluation() -> None:
    disclosed = disclose_answer(
        answer(report(K_STAYS - 1, K_EVENTS), metrics={"brier": 0.1}), site(), FLOOR, False
    ).update
    assert disclosed.metrics == {}
    assert [s.path for s in disclosed.suppressed] == ["evaluation", "metrics"]


@pytest.mark.parametrize(("events", "kept"), [(K_EVENTS - 1, False), (K_EVENTS, True)])
def test_train_loss_needs_min_events_in_the_training_split(events: int, kept: bool) -> None:
    disclosed = disclose_answer(answer(None), site(50, events), FLOOR, masked=False).update
    assert (disclosed.train_loss is not None) is kept
    expected = [] if kept else [Suppression(path="train_loss", rule="min_events", floor=K_EVENTS)]
    assert disclosed.suppressed == expected


@pytest.mark.parametrize(("rows", "reported"), [(K_STAYS - 1, 0), (K_STAYS, K_STAYS), (0, 0)])
def test_rows_of_an_evaluation_answer(rows: int, reported: int) -> None:
    evaluate = answer(None, task="evaluate", num_examples=rows, train_loss=None)
    disclosed = disclose_answer(evaluate, site(), FLOOR, masked=False).update
    assert disclosed.num_examples == reported
    assert [s.path for s in disclosed.suppressed] == (["num_examples"] if rows != reported else [])


@pytest.mark.parametrize(("rows", "declined"), [(K_STAYS - 1, True), (K_STAYS, False)])
def test_a_training_split_below_the_floor_declines(rows: int, declined: bool) -> None:
    refused = refuse_below_floor(answer(report(20, 5)), site(rows), FLOOR)
    assert (refused is not None) is declined
    if refused is not None:
        assert (refused.declined, refused.policy_rule) == ("policy", "disclosure_floor")
        assert refused.num_examples == 0 and refused.evaluation is None
        assert str(rows) not in (refused.declined_detail or "").replace(str(K_STAYS), "")


def test_no_training_rows_is_left_to_its_own_decline() -> None:
    assert refuse_below_floor(answer(None), site(0, 0), FLOOR) is None


def test_a_training_answer_below_the_floor_is_declined_and_sends_no_tensors() -> None:
    weights: Weights = {"w": np.ones(2, np.float32)}
    update, outgoing = finish_answer(
        answer(None, num_examples=K_STAYS - 1), weights, site(), FLOOR, None
    )
    assert outgoing is None
    assert (update.declined, update.policy_rule) == ("policy", "disclosure_floor")


def test_finish_answer_masks_with_the_withheld_evaluation() -> None:
    seen: list[object] = []

    def mask(
        trained: Weights,
        rows: int,
        evaluation: EvaluationReport | None,
        validation: EvaluationReport | None,
    ) -> Weights:
        seen.append((rows, evaluation))
        return {name: array.astype(np.uint64) for name, array in trained.items()}

    small = report(K_STAYS - 1, K_EVENTS)
    weights: Weights = {"w": np.ones(2, np.float32)}
    update, outgoing = finish_answer(answer(small), weights, site(), FLOOR, mask)
    assert outgoing is not None and outgoing["w"].dtype == np.uint64
    assert seen == [(40, small)]
    assert update.evaluation is None


def test_without_a_floor_nothing_changes() -> None:
    original = answer(report(1, 0), num_examples=1)
    assert disclose_answer(original, site(1, 0), None, masked=False).update is original
    assert refuse_below_floor(original, site(1, 0), None) is None


def moments(count: list[float], num_examples: int = 50) -> MomentsReport:
    return MomentsReport(
        federation_id="f",
        site_id="site-a",
        num_examples=num_examples,
        count=count,
        total=[c * 2 for c in count],
        total_sq=[c * 5 for c in count],
    )


def test_a_feature_measured_below_the_floor_is_withheld_alone() -> None:
    disclosed = disclose_moments(moments([K_STAYS - 1, K_STAYS]), ("age", "hr"), FLOOR)
    assert disclosed.count == [0.0, K_STAYS]
    assert disclosed.total == [0.0, K_STAYS * 2]
    assert disclosed.total_sq == [0.0, K_STAYS * 5]
    assert disclosed.suppressed == [
        Suppression(path="moments.age", rule="min_stays", floor=K_STAYS)
    ]


def test_a_training_split_below_the_floor_reports_no_moments() -> None:
    disclosed = disclose_moments(moments([5.0, 5.0], K_STAYS - 1), ("age", "hr"), FLOOR)
    assert disclosed.num_examples == 0
    assert disclosed.count == disclosed.total == disclosed.total_sq == [0.0, 0.0]
    assert [s.path for s in disclosed.suppressed] == ["moments"]


def test_unmeasured_features_and_no_floor_leave_the_report_as_is() -> None:
    untouched = moments([0.0, K_STAYS])
    assert disclose_moments(untouched, ("age", "hr"), FLOOR) is untouched
    assert disclose_moments(moments([1.0, 1.0]), ("age", "hr"), None) == moments([1.0, 1.0])


@pytest.mark.parametrize(("rows", "measured"), [(K_STAYS - 1, K_STAYS - 1), (40, K_STAYS - 1)])
def test_the_aggregator_admits_a_report_the_floor_held_back(rows: int, measured: int) -> None:
    """The hospital's real report (profile included) passes every check of the aggregator."""
    x = np.ones((rows, 2), np.float32)
    x[measured:, 0] = np.nan  # "age" measured on `measured` stays only
    y = (np.arange(rows) < 3).astype(np.int8)
    data = SiteData("site-a", ("age", "hr"), Split(x, y), split(4, 1), split(4, 1))
    document = moments_report("f", data, FLOOR)
    checked, found = check_moments(
        document.model_dump_json().encode(), "site-a", "f", 2, max_examples=1000
    )
    assert found.count[0] == 0.0
    assert {s.path for s in checked.suppressed} & {"moments", "moments.age"}


def test_every_field_of_an_answer_is_decided() -> None:
    """A new manifest field must be decided by the floor (and listed) before it can leave."""
    assert set(UpdateManifest.model_fields) == ANSWER_FIELDS
    assert set(EvaluationReport.model_fields) == {
        "num_examples", "loss_sum", "histogram", "reference", "finetuned"
    }  # fmt: skip

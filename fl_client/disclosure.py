"""The disclosure floor applied to everything a hospital sends in the clear.

Every field of an answer is decided here, failing closed, on the finished manifest:

* ``evaluation`` (histogram, loss sum, reference histograms, fine-tuned report): computed on
  the test split; below ``min_stays`` stays or ``min_events`` deaths in it, the whole report is
  withheld. Under secure aggregation, in a training round, every hospital's evaluation goes
  into the masked sum instead of the clear (``fl_core.secagg.masked_evaluation``): a small
  hospital still counts in the federation's AUROC, and the aggregator never sees its
  histogram alone, nor the others' to subtract from the sum.
* ``validation`` (histogram and loss sum of the same model on the validation split held out
  of the training rows): decided like ``evaluation``, on the validation split's own stays
  and deaths; under secure aggregation it goes into the masked sum beside it.
* ``evaluation.reference.<name>``: a reference score may be missing for some stays, so each
  reference histogram is checked on the stays it counts.
* ``metrics``: no basis is declared for them, so they leave only with an evaluation that does.
* ``num_examples``: the training rows, needed in the clear by the weight bounds and FedAvg;
  a training split below ``min_stays`` declines training (``refuse_below_floor``, before any
  step is taken) and reports 0 rows in every answer.
* ``train_loss``: computed on the training split; withheld below ``min_events`` deaths in it.
* ``privacy`` (epsilon, steps) describes the accountant, not a cohort: it leaves as is.

The moments report is decided per feature (``disclose_moments``). The preflight report holds
no aggregate of patients (identity, access checks), so the floor has nothing to decide there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fl_client.secagg_client import Mask
from fl_core.data.base import SiteData, Split
from fl_core.disclosure import DisclosureFloor, Suppression, check_floor, suppression
from fl_core.exchange.manifests import EvaluationReport, MomentsReport, UpdateManifest
from fl_core.types import Weights

ANSWER_FIELDS = frozenset(
    {
        # the round and the answer's identity: they describe no patient
        "federation_id", "site_id", "round_index", "task", "global_sha256", "nonce",
        # the hospital's own statements: its decline and what it withheld
        "declined", "declined_detail", "policy_rule", "suppressed",
        # decided by the floor (module docstring)
        "num_examples", "train_loss", "evaluation", "validation", "metrics", "privacy",
    }
)  # fmt: skip
"""Every ``UpdateManifest`` field, each decided here. ``_with_disclosed`` builds the answer
from these alone, so a field added to the manifest later leaves no hospital until it is
decided and listed (the tests compare this set with the model's)."""


@dataclass(frozen=True)
class DisclosedAnswer:
    """An answer after the floor: the manifest to write, and the evaluation that goes only
    into the masked sum (None when nothing does)."""

    update: UpdateManifest
    masked_evaluation: EvaluationReport | None = None
    masked_validation: EvaluationReport | None = None


def events_in(split: Split) -> int:
    return int(np.count_nonzero(split.y))


def refuse_below_floor(
    update: UpdateManifest, data: SiteData, floor: DisclosureFloor | None
) -> UpdateManifest | None:
    """A training round declined because the training split is below the floor, or None.

    FedAvg and the weight bounds need the training rows in the clear, so a split under
    ``min_stays`` cannot train. Decided before training, so no privacy budget is spent on it.
    The detail names the floor, never the split's size.
    """
    rows = data.train.num_examples
    if floor is None or rows == 0 or check_floor(floor, "num_examples", rows) is None:
        return None  # no rows at all: declined as no_training_rows, which discloses nothing
    return _floor_decline(update, floor)


def _floor_decline(update: UpdateManifest, floor: DisclosureFloor) -> UpdateManifest:
    return UpdateManifest(
        federation_id=update.federation_id,
        site_id=update.site_id,
        round_index=update.round_index,
        task="train",
        global_sha256=update.global_sha256,
        num_examples=0,
        nonce=update.nonce,
        declined="policy",
        policy_rule="disclosure_floor",
        declined_detail=f"site {update.site_id}: the training split is below the site "
        f"policy's disclosure floor (min_stays {floor.min_stays}); it does not train",
        suppressed=[suppression("num_examples", "min_stays", floor)],
    )


def _evaluation_suppression(report: EvaluationReport, floor: DisclosureFloor) -> Suppression | None:
    histogram = report.histogram
    return check_floor(floor, "evaluation", histogram.num_examples, histogram.positives.total)


def _references_kept(
    report: EvaluationReport, floor: DisclosureFloor, prefix: str
) -> tuple[EvaluationReport, list[Suppression]]:
    """``report`` without the reference histograms below the floor, and their names."""
    kept = {}
    withheld = []
    for name, histogram in report.reference.items():
        found = check_floor(
            floor,
            f"{prefix}.reference.{name}",
            histogram.num_examples,
            histogram.positives.total,
        )
        if found is None:
            kept[name] = histogram
        else:
            withheld.append(found)
    if not withheld:
        return report, []
    return (
        EvaluationReport(
            num_examples=report.num_examples,
            loss_sum=report.loss_sum,
            histogram=report.histogram,
            reference=kept,
            finetuned=report.finetuned,
        ),
        withheld,
    )


def _disclosed_evaluation(
    report: EvaluationReport, floor: DisclosureFloor
) -> tuple[EvaluationReport, list[Suppression]]:
    """An evaluation that passed the floor, its references (and the fine-tuned report's)
    each decided on the stays they count."""
    finetuned: EvaluationReport | None = None
    finetuned_withheld: list[Suppression] = []
    if report.finetuned is not None:
        finetuned, finetuned_withheld = _references_kept(
            report.finetuned, floor, "evaluation.finetuned"
        )
    outer, withheld = _references_kept(report, floor, "evaluation")
    if finetuned is not report.finetuned:
        outer = EvaluationReport(
            num_examples=outer.num_examples,
            loss_sum=outer.loss_sum,
            histogram=outer.histogram,
            reference=outer.reference,
            finetuned=finetuned,
        )
    return outer, withheld + finetuned_withheld


def _with_disclosed(
    update: UpdateManifest,
    evaluation: EvaluationReport | None,
    validation: EvaluationReport | None,
    train_loss: float | None,
    metrics: dict[str, float],
    num_examples: int,
    suppressed: list[Suppression],
) -> UpdateManifest:
    return UpdateManifest(
        federation_id=update.federation_id,
        site_id=update.site_id,
        round_index=update.round_index,
        task=update.task,
        global_sha256=update.global_sha256,
        num_examples=num_examples,
        nonce=update.nonce,
        train_loss=train_loss,
        evaluation=evaluation,
        validation=validation,
        metrics=metrics,
        privacy=update.privacy,
        declined=update.declined,
        declined_detail=update.declined_detail,
        policy_rule=update.policy_rule,
        suppressed=[*update.suppressed, *suppressed],
    )


def _counted_in_masked_sum(below: Suppression | None) -> list[Suppression]:
    """A report below the floor that goes into the masked sum is named as counted there."""
    if below is None:
        return []
    return [
        Suppression(path=below.path, rule=below.rule, floor=below.floor, disclosed_as="masked_sum")
    ]


def _placed_evaluation(
    update: UpdateManifest, floor: DisclosureFloor | None, masked: bool
) -> tuple[EvaluationReport | None, EvaluationReport | None, list[Suppression]]:
    """Where the answer's evaluation goes: (in the clear, into the masked sum, named).

    Under secure aggregation every hospital's evaluation goes into the masked sum, whatever
    its size: were the larger hospitals' evaluations in the clear, the aggregator would get
    a small hospital's alone by subtracting them from the sum.
    """
    evaluation = update.evaluation
    if evaluation is None:
        return None, None, []
    below = None if floor is None else _evaluation_suppression(evaluation, floor)
    if masked:
        return None, evaluation, _counted_in_masked_sum(below)
    if below is not None:
        return None, None, [below]
    if floor is None:
        return evaluation, None, []
    kept, withheld = _disclosed_evaluation(evaluation, floor)
    return kept, None, withheld


def _placed_validation(
    update: UpdateManifest, floor: DisclosureFloor | None, masked: bool
) -> tuple[EvaluationReport | None, EvaluationReport | None, list[Suppression]]:
    """Where the validation report goes: (in the clear, into the masked sum, named), as
    ``_placed_evaluation`` decides the test report, on the validation split's own counts."""
    validation = update.validation
    if validation is None:
        return None, None, []
    histogram = validation.histogram
    below = (
        None
        if floor is None
        else check_floor(floor, "validation", histogram.num_examples, histogram.positives.total)
    )
    if masked:
        return None, validation, _counted_in_masked_sum(below)
    if below is not None:
        return None, None, [below]
    return validation, None, []


def disclose_answer(
    update: UpdateManifest, data: SiteData, floor: DisclosureFloor | None, masked: bool
) -> DisclosedAnswer:
    """The answer as it may leave the hospital under ``floor`` (None: no floor).

    ``masked``: this answer carries a masked update (secure aggregation, a training round
    the hospital trains in), so its evaluation goes into the masked sum, not the clear.
    """
    if floor is None and not (
        masked and (update.evaluation is not None or update.validation is not None)
    ):
        return DisclosedAnswer(update)
    training = update.task == "train" and update.declined is None
    if floor is not None and training and update.num_examples < floor.min_stays:
        return DisclosedAnswer(_floor_decline(update, floor))  # fail closed: never trained on
    evaluation, masked_evaluation, suppressed = _placed_evaluation(update, floor, masked)
    validation, masked_validation, validation_withheld = _placed_validation(update, floor, masked)
    metrics = update.metrics
    below = next((found for found in suppressed if found.path == "evaluation"), None)
    if floor is not None and metrics and below is not None:  # no basis declared: fail closed
        suppressed.append(suppression("metrics", below.rule, floor))
        metrics = {}
    num_examples, train_loss = update.num_examples, update.train_loss
    if floor is not None and 0 < num_examples < floor.min_stays:
        suppressed.append(suppression("num_examples", "min_stays", floor))
        num_examples = 0
    if floor is not None and train_loss is not None:
        found = check_floor(floor, "train_loss", data.train.num_examples, events_in(data.train))
        if found is not None:
            suppressed.append(found)
            train_loss = None
    suppressed.extend(validation_withheld)
    if not suppressed and masked_evaluation is None and masked_validation is None:
        return DisclosedAnswer(update)
    disclosed = _with_disclosed(
        update, evaluation, validation, train_loss, metrics, num_examples, suppressed
    )
    return DisclosedAnswer(disclosed, masked_evaluation, masked_validation)


def disclose_moments(
    report: MomentsReport, feature_names: tuple[str, ...], floor: DisclosureFloor | None
) -> MomentsReport:
    """The moments report with every feature measured on fewer than ``min_stays`` stays
    reported as zeros (the standardisation then ignores this hospital for that feature).

    A training split below the floor withholds every feature and the row count itself.
    """
    if floor is None:
        return report
    if report.num_examples < floor.min_stays:
        zeros = [0.0] * len(report.count)
        withheld = [suppression("moments", "min_stays", floor)]
        return _moments(report, 0, zeros, zeros, zeros, withheld, keep_profile=False)
    count, total, total_sq = list(report.count), list(report.total), list(report.total_sq)
    suppressed = []
    for i, measured in enumerate(report.count):
        name = feature_names[i] if i < len(feature_names) else str(i)
        found = check_floor(floor, f"moments.{name}", int(measured))
        if found is not None and measured > 0:
            count[i], total[i], total_sq[i] = 0.0, 0.0, 0.0
            suppressed.append(found)
    if not suppressed:
        return report
    return _moments(report, report.num_examples, count, total, total_sq, suppressed)


def _moments(
    report: MomentsReport,
    num_examples: int,
    count: list[float],
    total: list[float],
    total_sq: list[float],
    suppressed: list[Suppression],
    keep_profile: bool = True,
) -> MomentsReport:
    fields = report.model_dump()
    fields.update(
        num_examples=num_examples,
        count=count,
        total=total,
        total_sq=total_sq,
        suppressed=[*report.suppressed, *suppressed],
    )
    if not keep_profile:  # a split below the floor: its profile's cells are all below it too
        fields["profile"] = None
    return MomentsReport.model_validate(fields)


def finish_answer(
    update: UpdateManifest,
    outgoing: Weights | None,
    data: SiteData,
    floor: DisclosureFloor | None,
    mask: Mask | None,
) -> tuple[UpdateManifest, Weights | None]:
    """The manifest and tensors to send, the floor applied: under secure aggregation the
    tensors are masked with the evaluation the floor kept out of the clear."""
    masked = mask is not None and outgoing is not None and update.declined is None
    disclosed = disclose_answer(update, data, floor, masked)
    if outgoing is None or disclosed.update.declined is not None:
        return disclosed.update, None
    if mask is None:
        return disclosed.update, outgoing
    return disclosed.update, mask(
        outgoing,
        disclosed.update.num_examples,
        disclosed.masked_evaluation,
        disclosed.masked_validation,
    )

"""What a hospital says it withheld (``suppressed``) is hostile input like the rest.

Admission either accepts an answer's suppression list or rejects the answer with a named
reason; the aggregator only counts what an accepted, evaluation-less answer says it withheld;
a round with lying, flooding and malformed lists still closes, counting only the honest one.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from fedsilo.testing.manifests import admission_context, answer_to, update_manifest
from fl_core.admission import check_manifest, update_metadata
from fl_core.disclosure import MAX_SUPPRESSIONS, withheld_evaluation_rule
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import (
    MANIFEST_METADATA_KEY,
    EvaluationReport,
    GlobalManifest,
    ScoreHistogram,
    SparseCounts,
)
from fl_core.exchange.protocol import Exchange
from fl_core.serialisation import encode_weights
from fl_server.round_events import RoundEvents
from tests.hostile import FUZZ, JSON_VALUES, dumps, only_named_rejections
from tests.offline_round import run_offline

SUPPRESSION = {"path": "evaluation", "rule": "min_stays", "floor": 5}
ENTRIES = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {
            "path": st.one_of(st.text(max_size=300), JSON_VALUES),
            "rule": st.one_of(st.sampled_from(["min_stays", "min_events", "min_age"]), JSON_VALUES),
            "floor": st.one_of(st.integers(), JSON_VALUES),
        },
        optional={"disclosed_as": st.one_of(st.text(max_size=20), JSON_VALUES)},
    ),
)


@FUZZ
@given(st.one_of(JSON_VALUES, st.lists(ENTRIES, max_size=5)))
def test_a_hostile_suppression_list_is_admitted_or_a_named_rejection(value: object) -> None:
    document = update_manifest().model_dump(mode="json")
    document["suppressed"] = value
    with only_named_rejections(frozenset({"malformed_manifest"})):
        manifest = check_manifest(dumps(document), "site-a", admission_context())
        withheld_evaluation_rule(manifest.suppressed)  # what the round loop does with it


EVALUATION = EvaluationReport(
    num_examples=2,
    loss_sum=1.0,
    histogram=ScoreHistogram(
        bins=10,
        positives=SparseCounts(index=[7], count=[1]),
        negatives=SparseCounts(index=[2], count=[1]),
    ),
)
INITIAL = {"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float32)}
HONEST = "site-a"
LIAR = "site-b"  # sends its evaluation and says it withheld it
FLOOD = "site-c"  # one suppression too many
JUNK = "site-d"  # an unknown rule, a control character in a path
SITES = [HONEST, LIAR, FLOOD, JUNK]


class Hospitals(RoundEvents):
    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    def _write(self, manifest: GlobalManifest, site: str, metadata: dict[str, str]) -> None:
        weights = {name: np.ones_like(a) for name, a in INITIAL.items()}
        self.exchange.store.put_new(
            self.exchange.layout.update_weights_key(manifest.round_index, site),
            encode_weights(weights, metadata),
        )

    def round_opened(self, manifest: GlobalManifest) -> None:
        if self.exchange.list_answered_sites(manifest.round_index):
            return  # a restart: the answers are there
        if manifest.task == "evaluate":  # the final round: two plain evaluations
            for site in (HONEST, LIAR):
                evaluate = answer_to(manifest, site, train_loss=None, evaluation=EVALUATION)
                self.exchange.write_update(evaluate, None)
            return
        honest = answer_to(manifest, HONEST, suppressed=[{**SUPPRESSION, "rule": "min_events"}])
        liar = answer_to(manifest, LIAR, evaluation=EVALUATION, suppressed=[SUPPRESSION])
        for site, update in ((HONEST, honest), (LIAR, liar)):
            self._write(manifest, site, update_metadata(update))
        base = answer_to(manifest, FLOOD).model_dump(mode="json")
        flood = {**base, "suppressed": [SUPPRESSION] * (MAX_SUPPRESSIONS + 1)}
        self._write(manifest, FLOOD, {MANIFEST_METADATA_KEY: dumps(flood).decode()})
        base = answer_to(manifest, JUNK).model_dump(mode="json")
        junk = {
            **base,
            "suppressed": [{**SUPPRESSION, "rule": "min_age"}, {**SUPPRESSION, "path": "\x1b[2J"}],
        }
        self._write(manifest, JUNK, {MANIFEST_METADATA_KEY: dumps(junk).decode()})


def test_the_round_counts_only_what_an_honest_answer_withheld(tmp_path) -> None:
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange", durable=False), "test")
    bins = {"evaluation.histogram_bins": 10}
    assert run_offline(exchange, SITES, INITIAL, Hospitals(exchange), bins) == "done"
    result = exchange.read_result(1)
    assert result is not None
    assert sorted(d.site_id for d in result.accepted) == [HONEST, LIAR]
    assert {d.site_id: d.reason for d in result.rejected} == {
        FLOOD: "malformed_manifest",
        JUNK: "malformed_manifest",
    }
    assert result.withheld_evaluations == {"min_events": 1}  # the liar's evaluation counts
    assert result.evaluation is not None and result.evaluation.num_examples == 2

"""The report's privacy section shows epsilon per hospital per round and declined rounds."""

from __future__ import annotations

from fedsilo.ops.privacy_report import epsilon_table, privacy_html
from fedsilo.ops.report import _table
from fl_core.exchange.manifests import Decision, RoundPrivacy
from tests.fedsilo.ops._round_results import closed_round


def test_epsilon_per_hospital_per_round_and_the_declined_round():
    refused = Decision(
        site_id="site-a",
        status="declined",
        reason="privacy_budget_exhausted",
        detail="would spend 4.2 > 4",
        decided_unix=1.0,
    )
    results = [
        closed_round(
            1,
            privacy=RoundPrivacy(
                site_epsilon={"site-a": 3.9, "site-b": 1.5},
                dp_fedavg_epsilon=2.0,
                dp_fedavg_delta=1e-3,
            ),
        ),
        closed_round(
            2,
            privacy=RoundPrivacy(
                site_epsilon={"site-a": 3.9, "site-b": 2.25},
                dp_fedavg_epsilon=3.1,
                dp_fedavg_delta=1e-3,
            ),
            declined=[refused],
        ),
    ]
    headers, rows = epsilon_table(results)
    assert headers == ["hospital", "r1", "r2"]
    assert rows == [
        ["site-a", "3.90", "3.90"],
        ["site-b", "1.50", "2.25"],
        ["model (DP-FedAvg)", "2.00", "3.10"],
    ]
    page = privacy_html(results, _table)
    assert "privacy_budget_exhausted" in page and "would spend 4.2 &gt; 4" in page
    assert "delta 0.001" in page


def test_without_dp_the_section_says_so():
    page = privacy_html([closed_round(1)], _table)
    assert "Epsilon per hospital: not available in this run" in page
